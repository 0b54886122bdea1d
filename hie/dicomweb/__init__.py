"""DICOMweb at ``/dicomweb``: STOW-RS (metadata kept, pixel data left at the
source), QIDO-RS and WADO-RS metadata, under the same consent gate as FHIR.

:mod:`~hie.dicomweb.records` (the study, series and instance records in the
store), :mod:`~hie.dicomweb.stow` (storing a request's instances),
:mod:`~hie.dicomweb.search` (QIDO and metadata reads), :mod:`~hie.dicomweb.bodies`
and :mod:`~hie.dicomweb.multipart` (request and response bodies),
:mod:`~hie.dicomweb.router` (the routes). The DICOM domain itself — parsing,
the JSON model, QIDO matching, the ImagingStudy mapping — is :mod:`imaging`.
"""
