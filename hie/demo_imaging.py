"""The demo region's imaging: one study per patient at their first hospital,
stored through STOW-RS's own service as the hospital's DICOM adapter would send
it (metadata only; the pixels "stay" at the hospital PACS the RetrieveURLs name).

UIDs derive from the patient and hospital, so a re-run stores the same
instances again, which changes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, generate_uid

from hie.context import RequestContext
from hie.dicomweb import stow
from hie.fhir import writes
from hie.store.base import Store
from imaging.jsonmodel import to_dicom_json
from imaging.jsonparse import instance_from_json

#: modality, SOP class, body part, description, (series description, instances) per series
STUDIES = (
    ("CT", CTImageStorage, "CHEST", "CT chest", (("Axial 5mm", 3), ("Lung window", 2))),
    ("DX", DigitalXRayImageStorageForPresentation, "CHEST", "Chest X-ray PA/LAT",
     (("PA", 1), ("LAT", 1))),
)


async def seed_study(store: Store, hooks: Sequence[writes.WriteHook], *, hospital: str,
                     mrn_system: str, mrn: str, name: str, birth: str, sex: str,
                     rng: random.Random) -> None:
    """Store one study of the patient ``mrn`` as ``hospital``."""
    modality, sop_class, body_part, description, series_list = rng.choice(STUDIES)
    study_uid = generate_uid(entropy_srcs=[hospital, mrn, "study"])
    day = f"2025{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    pacs = f"https://pacs.{hospital}.example/dicom-web"
    incoming = []
    for s, (series_desc, count) in enumerate(series_list, start=1):
        series_uid = generate_uid(entropy_srcs=[hospital, mrn, "series", str(s)])
        for i in range(1, count + 1):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[hospital, mrn, str(s), str(i)])
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.PatientID, ds.IssuerOfPatientID = mrn, mrn_system
            ds.PatientName, ds.PatientBirthDate, ds.PatientSex = name, birth, sex
            ds.StudyDate, ds.StudyTime, ds.StudyID = day, "093000", "1"
            ds.AccessionNumber = f"{hospital[:3].upper()}{rng.randint(10**6, 10**7 - 1)}"
            ds.StudyDescription, ds.SeriesDescription = description, series_desc
            ds.Modality, ds.BodyPartExamined = modality, body_part
            ds.SeriesNumber, ds.InstanceNumber = s, i
            ds.Rows = ds.Columns = 512
            url = f"{pacs}/studies/{study_uid}/series/{series_uid}/instances/{ds.SOPInstanceUID}"
            doc = ds.to_json_dict()
            doc["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
            instance = instance_from_json(doc)
            stored = stow.Stored(instance.sop_class_uid, instance.sop_uid, instance.study_uid,
                                 instance.series_uid)
            incoming.append(stow.Incoming(to_dicom_json(instance, instance_url=url), stored))
    await stow.store_instances(store, RequestContext(organization=hospital), incoming,
                               patient_id_system=mrn_system, hooks=hooks)
    failed = [i.outcome.reason for i in incoming if i.outcome.failure is not None]
    if failed:
        raise RuntimeError(f"demo imaging refused: {failed}")
