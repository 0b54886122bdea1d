"""Hospital side: push client (auth, retry), durable outbox and sources (FHIR
files, HL7 v2 over MLLP, DICOM SCP / PACS poller). Filled by the adapters issue."""
