"""Wire contracts shared by the services (pydantic models) and data tables
(search parameters, sensitivity code lists). Imports nothing of ours."""
