"""DICOM domain (pydicom): metadata extraction (``parse``, ``part10``), the DICOM JSON
model (``jsonmodel``), query levels and QIDO-RS matching (``levels``, ``qido``) and the
FHIR ImagingStudy mapping (``fhirmap``). No web framework, no store; see docs/imaging.md."""
