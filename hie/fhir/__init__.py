"""FHIR R4 API: validation, CRUD, search, bundles and operations."""
