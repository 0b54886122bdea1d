"""DICOM domain (pydicom): metadata extraction, DICOM JSON, QIDO matching and the
FHIR ImagingStudy mapping. No web framework, no store. Filled by the imaging issue."""
