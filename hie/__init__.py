"""The regional health-record exchange: FHIR R4 and DICOMweb APIs over one
consent-gated document store."""

__version__ = "0.1.0"
