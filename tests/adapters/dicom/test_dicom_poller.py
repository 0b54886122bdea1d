"""The DICOMweb PACS poller against a real Orthanc with its DICOMweb plugin."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import scpkit
from peers.orthanc import Orthanc, start_orthanc

from adapters.outbox import Outbox
from adapters.sources.dicom_poller import PacsPoller

ODD_STUDY = "1.2.999.999.99.9.9999.8888"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as running:
        yield running


def upload(orthanc: Orthanc, files: list[Path]) -> None:
    """Upload what Orthanc accepts (it refuses a few of pydicom's odd test files)."""
    with httpx.Client(timeout=60) as client:
        for f in files:
            with contextlib.suppress(httpx.HTTPStatusError):
                orthanc.upload(f, client)


def pacs_sop_uids(orthanc: Orthanc) -> set[str]:
    r = httpx.get(f"{orthanc.http_url}/instances", params={"expand": ""}, timeout=60)
    r.raise_for_status()
    return {i["MainDicomTags"]["SOPInstanceUID"] for i in r.json()}


def queued(outbox: Outbox) -> dict[str, dict[str, Any]]:
    out = {}
    for m in outbox.claim(10_000):
        assert m.kind == "dicom"
        out[m.patient_key.removeprefix("dicom:")] = json.loads(m.payload)
    outbox.recover()  # leave them waiting for the next look
    return out


def test_polls_queue_each_instance_once_with_the_pacs_as_its_source(
        orthanc: Orthanc, tmp_path: Path):
    upload(orthanc, list(scpkit.storage_files()))
    box = Outbox(tmp_path / "outbox.db")
    pacs = orthanc.dicomweb_url
    first = PacsPoller(pacs, box, page=5).poll_once()  # paged QIDO: 5 studies a page
    # pydicom's RT dose files share one Study Instance UID in a way Orthanc files as
    # two studies: it lists the UID but answers 404 for its metadata. That study is
    # reported, and the poll goes on with the others.
    # Instances without a PatientID are refused by the exchange, so they are reported
    # rather than queued.
    studies = [f for f in first.failures if f.startswith("study ")]
    instances = [f for f in first.failures if not f.startswith("study ")]
    assert studies == [f"study {ODD_STUDY}: metadata answered 404"]
    no_patient = {scpkit.sop_uid(f) for f in scpkit.storage_files()
                  if not scpkit.patient_id(f)} & pacs_sop_uids(orthanc)
    assert {f.split(":")[0] for f in instances} == no_patient
    assert all(f.endswith("PatientID is empty; the exchange links studies to patients")
               for f in instances)
    odd = {scpkit.sop_uid(f) for f in scpkit.storage_files()
           if scpkit.study_uid(f) == ODD_STUDY} | no_patient
    messages = queued(box)
    assert set(messages) == pacs_sop_uids(orthanc) - odd and first.instances == len(messages)

    ct = messages[scpkit.sop_uid(scpkit.TEST_FILES / "CT_small.dcm")]
    study, series, sop = (ct[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
    assert ct["00081190"]["Value"] == [f"{pacs}/studies/{study}/series/{series}/instances/{sop}"]
    assert ct["7FE00010"]["BulkDataURI"].startswith(f"{pacs}/studies/{study}/")
    assert "InlineBinary" not in ct["7FE00010"]

    # a poller started again over the same outbox remembers what it sent
    again = PacsPoller(pacs, box, page=5).poll_once()
    assert again.instances == 0 and box.status().depth == len(messages)

    # a new study today, found by the poll since the mark; then it grows
    new = scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "new", 3)
    upload(orthanc, new)
    later = PacsPoller(pacs, box, page=5).poll_once()
    assert later.instances == 3 and later.studies < first.studies  # since the mark only
    grown = scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "grown", 2,
                            study=scpkit.study_uid(new[0]))
    upload(orthanc, grown)
    assert PacsPoller(pacs, box, page=5).poll_once().instances == 2
    assert set(queued(box)) == pacs_sop_uids(orthanc) - odd

def test_a_study_dated_before_the_mark_is_found_by_the_full_listing(
        orthanc: Orthanc, tmp_path: Path):
    box = Outbox(tmp_path / "outbox.db")
    pacs = orthanc.dicomweb_url
    PacsPoller(pacs, box).poll_once()
    before = box.status().depth
    old = scpkit.copies(scpkit.TEST_FILES / "CT_small.dcm", tmp_path / "old", 2,
                          date="19990101")
    upload(orthanc, old)
    assert PacsPoller(pacs, box).poll_once().instances == 0  # outside the look-back
    assert PacsPoller(pacs, box, full_every=0).poll_once().instances == 2
    assert box.status().depth == before + 2


def test_an_unreachable_pacs_raises_and_marks_nothing(tmp_path: Path):
    box = Outbox(tmp_path / "outbox.db")
    poller = PacsPoller("http://127.0.0.1:9/dicom-web", box)
    with pytest.raises(httpx.TransportError):
        poller.poll_once()
    assert box.recall("dicom-pacs:http://127.0.0.1:9/dicom-web:mark") is None
