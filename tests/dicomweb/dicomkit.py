"""DICOM instances and STOW-RS bodies for the DICOMweb API tests: real Part 10
files written by pydicom, and the multipart/related bodies STOW-RS clients send."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

DICOMWEB = "/dicomweb"
MRN_SYSTEM = "urn:hie:hospital:mrn"


def instance(*, study: str, series: str | None = None, sop: str | None = None,
             patient_id: str = "MRN-1", name: str = "Wang^Xiuying", modality: str = "CT",
             study_date: str = "20240301", accession: str = "ACC-1", number: int = 1,
             sex: str = "F", birth: str = "19750314", pixels: bool = True) -> Dataset:
    """A small CT/MR image instance."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientSex = sex
    ds.PatientBirthDate = birth
    ds.StudyDate = study_date
    ds.StudyTime = "083000"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.StudyDescription = "Chest"
    ds.SeriesDescription = "Axial"
    ds.ReferringPhysicianName = "Li^Lei"
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(8 * 8 * 2)
    return ds


def part10(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def multipart(parts: Sequence[bytes], part_type: str = "application/dicom"
              ) -> tuple[bytes, str]:
    """A multipart/related body and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: " + part_type.encode()
                    + b"\r\n\r\n" + p + b"\r\n" for p in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="{part_type}"; boundary={boundary}'


async def stow(client: httpx.AsyncClient, datasets: Sequence[Dataset], *,
               path: str = "/studies") -> httpx.Response:
    """STOW-RS of Part 10 instances."""
    body, ctype = multipart([part10(ds) for ds in datasets])
    return await client.post(DICOMWEB + path, content=body,
                             headers={"Content-Type": ctype,
                                      "Accept": "application/dicom+json"})


def uids(seq_items: list[dict], tag: str = "00081155") -> set[str]:
    return {i[tag]["Value"][0] for i in seq_items if i.get(tag, {}).get("Value")}


def value(ds_json: dict, tag: str) -> object:
    v = (ds_json.get(tag) or {}).get("Value")
    return v[0] if v else None
