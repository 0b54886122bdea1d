"""One module per FHIR operation ($everything, …)."""
