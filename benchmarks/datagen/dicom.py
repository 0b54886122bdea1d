"""Synthetic DICOM instances for the imaging tests and benchmarks, made from
pydicom's own test files (no network: the files ship with pydicom).

Each instance is a template from pydicom's test files — pixel data and all — with
fresh UIDs and the patient, study and series attributes of a generated region:
patients with Chinese names (``Wang^Xiuying=王^秀英``, some ``王^秀英`` only, a
few in GB 18030 rather than UTF-8) and Latin ones, hospital patient IDs, birth
dates and sex; studies of one modality (CT, MR, CR, DX, US) on a study date, with
several series of several instances. Deterministic for a seed: the same seed gives
the same files, UIDs included.

>>> from benchmarks.datagen.dicom import generate_instances
>>> made = generate_instances(tmp_path, seed=1, instances=200)
>>> made[0].path, made[0].study_uid, made[0].modality

:func:`readable_test_files` is the other half: pydicom's test files that are
complete, distinct storage instances (one per SOP Instance UID), to feed as is.
"""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from benchmarks.datagen.chart import HOSPITALS
from benchmarks.datagen.identity import (
    _FAMILY,
    _FOREIGN_FAMILY,
    _FOREIGN_GIVEN_FEMALE,
    _FOREIGN_GIVEN_MALE,
    _GIVEN_FEMALE,
    _GIVEN_MALE,
    _pinyin_given,
)

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
#: Changes whenever the generator makes different files for the same seed, so that
#: kept data sets (benchmarks/out/) are made again.
VERSION = 2
#: The last day a study may take place on.
TODAY = date(2026, 11, 1)

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


@dataclass(frozen=True)
class Template:
    """A test file to copy, and what to make of it."""

    name: str                    # path under pydicom's test_files
    sop_class: str | None = None  # overrides the file's SOP Class UID


# Per modality: templates (cycled through by series), series per study, instances
# per series, relative frequency, body parts, study descriptions.
_MODALITIES: dict[str, dict] = {
    "CT": {"templates": (Template("CT_small.dcm"),
                         Template("dicomdirtests/77654033/CT2/17106")),
           "series": (2, 4), "instances": (8, 40), "weight": 30,
           "body": (("CHEST", "胸部CT平扫"), ("HEAD", "头颅CT平扫"),
                    ("ABDOMEN", "上腹部CT增强"), ("CHEST", "胸部低剂量CT"))},
    "MR": {"templates": (Template("MR_small.dcm"), Template("MR_small_jpeg_ls_lossless.dcm"),
                         Template("MR_small_RLE.dcm")),
           "series": (3, 6), "instances": (5, 24), "weight": 25,
           "body": (("BRAIN", "头颅MRI平扫"), ("LSPINE", "腰椎MRI平扫"),
                    ("KNEE", "膝关节MRI"))},
    "CR": {"templates": (Template("dicomdirtests/77654033/CR1/6154"),),
           "series": (1, 2), "instances": (1, 2), "weight": 20,
           "body": (("CHEST", "胸部正侧位片"), ("HAND", "手正斜位片"))},
    "DX": {"templates": (Template("dicomdirtests/77654033/CR2/6247", DX_STORAGE),),
           "series": (1, 2), "instances": (1, 3), "weight": 15,
           "body": (("CHEST", "胸部DR正位"), ("LSPINE", "腰椎DR正侧位"))},
    "US": {"templates": (Template("examples_ybr_color.dcm"),
                         Template("ExplVR_BigEnd.dcm")),
           "series": (1, 2), "instances": (1, 6), "weight": 10,
           "body": (("ABDOMEN", "腹部彩超"), ("THYROID", "甲状腺彩超"))},
}

# Attributes of the templates that belong to their original patient or study and
# would contradict the generated ones.
_DROP = ("OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAge",
         "PatientSize", "PatientWeight", "PatientAddress", "PatientComments",
         "IssuerOfPatientIDQualifiersSequence", "ReferencedStudySequence",
         "ReferencedPatientSequence", "RequestAttributesSequence", "ReferencedImageSequence",
         "SourceImageSequence", "ReferencedPerformedProcedureStepSequence",
         "PerformedProcedureStepID", "RequestedProcedureID", "InstanceCreatorUID",
         "IrradiationEventUID", "StorageMediaFileSetUID", "ReferringPhysicianName",
         "PhysiciansOfRecord", "PerformingPhysicianName", "OperatorsName",
         "NameOfPhysiciansReadingStudy")

_DOCTORS = ("Wang^Jianguo=王^建国", "Li^Min=李^敏", "Zhang^Wei=张^伟", "Chen^Jing=陈^静",
            "Liu^Yang=刘^洋")


@dataclass(frozen=True)
class Patient:
    patient_id: str
    issuer: str          # the hospital's code
    institution: str     # the hospital's name
    name: str            # DICOM PN
    charset: str         # Specific Character Set
    birth_date: str      # YYYYMMDD
    sex: str             # M / F / O


@dataclass(frozen=True)
class Instance:
    """One generated Part 10 file and the attributes a test queries it by."""

    path: Path
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    accession: str
    modality: str
    series_uid: str
    series_number: int
    sop_uid: str
    sop_class: str
    instance_number: int
    transfer_syntax: str


@cache
def _template(name: str) -> bytes:
    return (TEST_FILES / name).read_bytes()


def _uid(seed: int, *parts: object) -> str:
    """A UID derived from the seed and ``parts`` (pydicom's root + a hash of them)."""
    return generate_uid(entropy_srcs=[f"hie-bench-dicom:{seed}", *map(str, parts)])


def _patient(rng: random.Random, number: int) -> Patient:
    hospital = rng.choice(HOSPITALS)
    sex = rng.choices(("M", "F", "O"), weights=(49, 49, 2))[0]
    male = sex == "M" or (sex == "O" and rng.random() < 0.5)
    age_days = rng.randint(0, 94 * 365)
    birth = TODAY - timedelta(days=age_days)
    charset = "ISO_IR 192"
    if rng.random() < 0.15:  # foreign residents: Latin names
        family, _ = rng.choice(_FOREIGN_FAMILY)
        given = rng.choice(_FOREIGN_GIVEN_MALE if male else _FOREIGN_GIVEN_FEMALE)
        name = f"{family}^{given}"
    else:
        family, family_py, _ = rng.choices(_FAMILY, weights=[f[2] for f in _FAMILY])[0]
        chars = rng.sample(_GIVEN_MALE if male else _GIVEN_FEMALE, k=rng.choice((1, 2, 2)))
        given = "".join(c for c, _ in chars)
        given_py = _pinyin_given([p for _, p in chars])
        form = rng.random()
        if form < 0.6:  # alphabetic and ideographic component groups, as most PACS write
            name = f"{family_py}^{given_py}={family}^{given}"
        else:  # Chinese characters only, in the first component group
            name = f"{family}^{given}"
            if form > 0.85:
                charset = "GB18030"
    return Patient(f"{hospital.mrn_prefix}{number:08d}", hospital.code, hospital.name, name,
                   charset, birth.strftime("%Y%m%d"), sex)


def _instance_dataset(template: Template) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(_template(template.name)))
    for keyword in _DROP:
        if keyword in ds:
            delattr(ds, keyword)
    if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_encapsulated \
            and len(ds.PixelData) % 2:
        # some small test files have their pixel data cut to an odd length
        ds.PixelData += b"\0"
    if template.sop_class:
        ds.SOPClassUID = template.sop_class
        ds.file_meta.MediaStorageSOPClassUID = template.sop_class
    return ds


def generate_instances(folder: Path, *, seed: int, instances: int) -> list[Instance]:
    """Write ``instances`` Part 10 files into ``folder`` (``STUDY/SERIES/NNNN.dcm``)
    and return what was written, in order. Studies are drawn until the count is
    reached (the last series is cut short to fit)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    modalities = list(_MODALITIES)
    weights = [_MODALITIES[m]["weight"] for m in modalities]
    patients: list[Patient] = []
    made: list[Instance] = []
    study_no = 0
    while len(made) < instances:
        # about one patient in three comes back for another study
        if patients and rng.random() < 0.35:
            patient = rng.choice(patients)
        else:
            patient = _patient(rng, len(patients) + 1)
            patients.append(patient)
        study_no += 1
        made.extend(_study(folder, rng, seed, study_no, patient,
                           rng.choices(modalities, weights=weights)[0],
                           instances - len(made)))
    return made


def _study(folder: Path, rng: random.Random, seed: int, study_no: int, patient: Patient,
           modality: str, room: int) -> Iterator[Instance]:
    spec = _MODALITIES[modality]
    study_uid = _uid(seed, "study", study_no)
    day = TODAY - timedelta(days=rng.randint(0, 3 * 365))
    study_date = day.strftime("%Y%m%d")
    study_time = f"{rng.randint(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    accession = f"A{seed % 1000:03d}{study_no:07d}"
    body, description = rng.choice(spec["body"])
    referring = rng.choice(_DOCTORS)
    templates = spec["templates"]
    for series_no in range(1, rng.randint(*spec["series"]) + 1):
        series_uid = _uid(seed, "series", study_no, series_no)
        frame_uid = _uid(seed, "frame", study_no, series_no)
        template = templates[(study_no + series_no) % len(templates)]
        count = min(room, rng.randint(*spec["instances"]))
        for number in range(1, count + 1):
            room -= 1
            sop_uid = _uid(seed, "instance", study_no, series_no, number)
            ds = _instance_dataset(template)
            ds.SpecificCharacterSet = patient.charset
            ds.TimezoneOffsetFromUTC = "+0800"  # the templates carry their own
            ds.PatientName = patient.name
            ds.PatientID = patient.patient_id
            ds.IssuerOfPatientID = patient.issuer
            ds.PatientBirthDate = patient.birth_date
            ds.PatientSex = patient.sex
            ds.StudyInstanceUID = study_uid
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
            ds.AccessionNumber = accession
            ds.StudyID = str(study_no)
            ds.StudyDescription = description
            ds.ReferringPhysicianName = referring
            ds.InstitutionName = patient.institution
            ds.Modality = modality
            ds.BodyPartExamined = body
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_no
            ds.SeriesDescription = f"{description} {series_no}"
            ds.FrameOfReferenceUID = frame_uid
            ds.SOPInstanceUID = sop_uid
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.InstanceNumber = number
            path = folder / f"{study_no:05d}" / f"{series_no:02d}" / f"{number:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            yield Instance(path, patient.patient_id, patient.name, patient.birth_date,
                           patient.sex, study_uid, study_date, accession, modality,
                           series_uid, series_no, sop_uid, str(ds.SOPClassUID), number,
                           str(ds.file_meta.TransferSyntaxUID))
            if room == 0:
                return


# Test files that are incomplete or broken on purpose; SC_rgb_jpeg.dcm is one DCMTK
# (and so Orthanc, and storescu) cannot parse.
_NOT_INSTANCES = ("MR_truncated.dcm", "rtplan_truncated.dcm", "badVR.dcm", "SC_rgb_jpeg.dcm")


def readable_test_files(*, with_patient_id: bool = False) -> list[Path]:
    """pydicom's test files that are complete storage instances — a File Meta
    header, a SOP Class and Study, Series and SOP Instance UIDs — one per SOP
    Instance UID (the first in name order: the test files hold the same instance
    in several transfer syntaxes), DICOMDIRs and broken files left out.

    ``with_patient_id``: only those that name a patient (a non-empty PatientID),
    as the exchange files every study under the hospital's patient."""
    seen: set[str] = set()
    picked: list[Path] = []
    for f in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        if f.name in _NOT_INSTANCES or f.name.startswith("DICOMDIR"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM, or broken on purpose
            continue
        uids = [ds.get(k) for k in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID",
                                     "SOPInstanceUID")]
        if not all(uids) or "TransferSyntaxUID" not in ds.file_meta:
            continue
        if with_patient_id and not ds.get("PatientID"):
            continue
        if str(uids[3]) in seen:
            continue
        seen.add(str(uids[3]))
        picked.append(f)
    return picked
