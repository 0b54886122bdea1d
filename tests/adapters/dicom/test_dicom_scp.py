"""The C-STORE SCP in-process, with DCMTK's ``storescu`` and pynetdicom as senders:
success only for what is in the outbox, failure statuses for what is not."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import scpkit
from peers.orthanc import STORESCU
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from adapters.outbox import Outbox
from adapters.sources import dicom_scp, dicom_ul
from adapters.sources.dicom_acceptor import AcceptorServer

AET = "HIE_TEST_SCP"
WADO = "http://pacs.hospital.test/wado-rs"


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db")


@pytest.fixture
def scp(outbox: Outbox) -> Iterator[AcceptorServer]:
    server = dicom_scp.start("127.0.0.1", 0, outbox=outbox, settings=dicom_scp.ScpSettings(
        ae_title=AET, retrieve_base=WADO))
    try:
        yield server
    finally:
        server.shutdown()


def queued(outbox: Outbox) -> dict[str, dict[str, Any]]:
    """SOP Instance UID → DICOM JSON of every message waiting in the outbox."""
    out = {}
    for m in outbox.claim(10_000):
        assert m.kind == "dicom" and m.patient_key.startswith("dicom:")
        out[m.patient_key.removeprefix("dicom:")] = json.loads(m.payload)
    return out


def test_every_instance_storescu_saw_stored_is_in_the_outbox(
        scp: AcceptorServer, outbox: Outbox, tmp_path: Path):
    files = list(scpkit.storage_files())
    sent = scpkit.storescu(files, port=scp.server_address[1], called_aet=AET,
                             workdir=tmp_path / "send")
    assert len(sent.stored) >= 100, sent.output[-3000:]
    # the exchange links every study to a patient: no PatientID, no success
    assert sent.failed == [f for f in sent.stored + sent.failed if not scpkit.patient_id(f)]
    assert "Error: DataSetDoesNotMatchSOPClass" in sent.output
    messages = queued(outbox)
    assert set(messages) == {scpkit.sop_uid(f) for f in sent.stored}

    ct = messages[scpkit.sop_uid(scpkit.TEST_FILES / "CT_small.dcm")]
    study, series, sop = (ct[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
    url = f"{WADO}/studies/{study}/series/{series}/instances/{sop}"
    assert ct["00081190"]["Value"] == [url]  # RetrieveURL at the hospital's PACS
    assert ct["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    assert ct["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    # pixels stay at the hospital: no pixel data element carries a value
    assert all("InlineBinary" not in d.get("7FE00010", {}) for d in messages.values())
    big = scpkit.TEST_FILES / "examples_rgb_color.dcm"  # 231 KB of pixels
    assert len(json.dumps(messages[scpkit.sop_uid(big)])) < 10_000


def test_without_a_retrieve_base_bulk_data_is_left_out(outbox: Outbox, tmp_path: Path):
    server = dicom_scp.start("127.0.0.1", 0, outbox=outbox,
                             settings=dicom_scp.ScpSettings(ae_title=AET))
    try:
        ct = scpkit.TEST_FILES / "CT_small.dcm"
        sent = scpkit.storescu([ct], port=server.server_address[1], called_aet=AET,
                                 workdir=tmp_path)
    finally:
        server.shutdown()
    assert sent.stored == [ct]
    [doc] = queued(outbox).values()
    assert "7FE00010" not in doc and "00081190" not in doc


def _send_raw(port: int, path: Path) -> Any:
    """C-STORE ``path`` as it is on disk (pynetdicom streams the data set from the
    file, naming the instance by its file meta): a data set no SCU would build."""
    ae = AE(ae_title="RAWSCU")
    meta = pydicom.filereader.read_file_meta_info(path)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()


@pytest.mark.parametrize("case", ["no SOP Instance UID", "no Study Instance UID",
                                  "not DICOM", "other SOP Instance UID than the request's"])
def test_bad_instances_get_a_failure_status_and_nothing_is_queued(
        case: str, scp: AcceptorServer, outbox: Outbox, tmp_path: Path):
    ds = pydicom.dcmread(scpkit.TEST_FILES / "MR_small.dcm")
    path = tmp_path / "bad.dcm"
    if case == "no SOP Instance UID":
        del ds.SOPInstanceUID
    elif case == "no Study Instance UID":
        del ds.StudyInstanceUID
    ds.save_as(path, enforce_file_format=True)
    if case.startswith("other"):  # the file meta (the request) keeps the old UID
        ds.SOPInstanceUID = "1.2.3.4.5.6"
        ds.save_as(path, enforce_file_format=False)
    if case == "not DICOM":  # the file meta, then garbage where the data set belongs
        head = len(path.read_bytes()) - len(ds.PixelData) - 2000
        path.write_bytes(path.read_bytes()[:head // 4] + os.urandom(3000))
    status = _send_raw(scp.server_address[1], path)
    assert status.Status in (0xA900, 0xC000), hex(status.Status)
    assert status.ErrorComment
    assert outbox.status().depth == 0


def test_an_outbox_that_cannot_write_answers_out_of_resources(tmp_path: Path):
    class FullDisk:
        def put(self, **_: Any) -> int:
            raise OSError(28, "No space left on device")

    server = dicom_scp.start("127.0.0.1", 0, outbox=FullDisk(),
                             settings=dicom_scp.ScpSettings(ae_title=AET))
    try:
        status = _send_raw(server.server_address[1], scpkit.TEST_FILES / "CT_small.dcm")
    finally:
        server.shutdown()
    assert status.Status == 0xA700 and "outbox" in status.ErrorComment


def test_echo_and_the_called_ae_title(scp: AcceptorServer):
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.server_address[1], ae_title=AET)
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    wrong = scpkit.associate(ae, scp.server_address[1], "SOMEONE_ELSE")
    assert wrong.is_rejected


def test_no_nagle_stall_with_a_sender_that_keeps_nagle_on(
        scp: AcceptorServer, outbox: Outbox, tmp_path: Path):
    """DCMTK (Debian's default, no ``TCP_NODELAY`` in its environment) writes the
    C-STORE command and the data set separately; without our quick ACK each small
    instance waits ~40 ms for the delayed ACK (50 instances: ~2.5 s)."""
    files = scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "f", 50)
    links = tmp_path / "send"
    links.mkdir()
    for f in files:
        (links / f.name).symlink_to(f)
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    start = time.monotonic()
    done = subprocess.run([STORESCU, "-aec", AET, "+sd", "127.0.0.1",
                           str(scp.server_address[1]), str(links)], env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert outbox.status().depth == 50
    assert elapsed < 1.2, f"50 small instances took {elapsed:.2f} s"


def test_the_part10_file_is_the_instance_as_sent_behind_its_file_meta(tmp_path: Path):
    """The SCP writes the file meta itself (cheaper than pydicom's writer): pydicom
    must read back the request's SOP class, instance and transfer syntax, our
    implementation UID, and the data set storescu sent, element for element."""
    seen: list[bytes] = []
    settings = dicom_scp.ScpSettings(ae_title=AET)
    server = dicom_scp.start("127.0.0.1", 0, outbox=None, settings=settings)  # type: ignore[arg-type]
    server.handler = lambda request: (seen.append(dicom_scp.part10(request)), (0, None))[1]
    files = [scpkit.TEST_FILES / n for n in ("CT_small.dcm", "MR_small.dcm",
                                             "JPEG2000.dcm", "rtplan.dcm")]
    try:
        sent = scpkit.storescu(files, port=server.server_address[1], called_aet=AET,
                               workdir=tmp_path)
    finally:
        server.shutdown()
    assert len(sent.stored) == len(files) == len(seen), sent.output[-2000:]
    originals = {scpkit.sop_uid(f): pydicom.dcmread(f) for f in files}
    for data in seen:
        ours = pydicom.dcmread(io.BytesIO(data))
        theirs = originals.pop(ours.file_meta.MediaStorageSOPInstanceUID)
        meta = ours.file_meta
        assert meta.MediaStorageSOPClassUID == theirs.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == theirs.SOPInstanceUID
        assert meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID
        assert meta.ImplementationClassUID == dicom_ul.IMPLEMENTATION_CLASS_UID
        assert meta.FileMetaInformationVersion == b"\x00\x01"
        if 0xFFFCFFFC in theirs:  # storescu leaves the trailing padding behind
            del theirs[0xFFFCFFFC]
        assert ours == theirs  # every element of the data set
    assert not originals
