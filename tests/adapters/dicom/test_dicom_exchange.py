"""``hie-adapter dicom`` as a hospital runs it, against a real exchange (``hie serve``)
and, for ``--pacs``, a real Orthanc: instances in, metadata at the exchange, once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import scpkit
from adapter_exchange import ADAPTER, Exchange, free_port
from peers.orthanc import start_orthanc
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from adapters.client import ExchangeClient
from adapters.outbox import Outbox

AET = "HIE_ADAPTER_T"
WADO = "http://pacs.hospital.test/wado-rs"


def start_scp(args: list[str], port: int, log: Path) -> subprocess.Popen:
    """``hie-adapter dicom --listen`` in a subprocess, once it answers a C-ECHO."""
    proc = subprocess.Popen([ADAPTER, "dicom", "--listen", f"127.0.0.1:{port}", "--ae-title",
                             AET, "--retrieve-base", WADO, *args],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        assoc = ae.associate("127.0.0.1", port, ae_title=AET)
        if assoc.is_established:
            assoc.release()
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the SCP did not answer: {log.read_text()}")


def exchange_instances(exchange: Exchange) -> Counter[str]:
    """How often each SOP Instance UID is at the exchange (QIDO-RS, every page)."""
    headers = {"Authorization": f"Bearer {exchange.token()}", "Accept": "application/dicom+json"}
    seen: Counter[str] = Counter()
    offset = 0
    while True:
        r = httpx.get(f"{exchange.base}/dicomweb/instances", headers=headers,
                      params={"limit": 200, "offset": offset}, timeout=60)
        assert r.status_code in (200, 204), r.text
        page = r.json() if r.status_code == 200 else []
        seen.update(ds["00080018"]["Value"][0] for ds in page)
        if len(page) < 200:
            return seen
        offset += len(page)


def wait_drained(outbox: Path, timeout: float = 90.0) -> None:
    box = Outbox(outbox)
    deadline = time.monotonic() + timeout
    while box.status().depth:
        assert time.monotonic() < deadline, box.status()
        time.sleep(0.2)
    box.close()


def test_kill_9_after_the_acks_then_restart_delivers_each_instance_once(
        exchange: Exchange, tmp_path: Path):
    files = [f for f in scpkit.storage_files() if scpkit.patient_id(f)]
    files += scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "study", 40)
    outbox = tmp_path / "outbox.db"
    port = free_port()
    # first run: the exchange cannot be reached, so every acknowledged instance is
    # still in the outbox when the adapter is killed
    nowhere = exchange.adapter_args(outbox)
    nowhere[1] = f"http://127.0.0.1:{free_port()}"
    first = start_scp(nowhere, port, tmp_path / "adapter.log")
    sent = scpkit.storescu(files, port=port, called_aet=AET, workdir=tmp_path / "send")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert not sent.failed and len(sent.stored) > 130, sent.output[-2000:]
    stored = {scpkit.sop_uid(f) for f in sent.stored}
    assert Outbox(outbox).status().depth == len(sent.stored)  # every success is on disk
    # a crash after the exchange committed but before `done`: these go twice
    with sqlite3.connect(outbox) as db:
        last = [bytes(r[0]) for r in db.execute(
            "SELECT payload FROM message ORDER BY id DESC LIMIT 10")]
    with ExchangeClient(exchange.base, client_id=exchange.client_id,
                        private_pem=exchange.private_pem, kid=exchange.kid) as client:
        assert client.post_dicom(last).status == 200

    second = start_scp(exchange.adapter_args(outbox), port, tmp_path / "adapter.log")
    try:
        wait_drained(outbox)
    finally:
        second.terminate()
        second.wait(10)
    at_exchange = exchange_instances(exchange)
    assert stored <= set(at_exchange)
    assert {uid: n for uid, n in at_exchange.items() if n > 1} == {}
    state = Outbox(outbox).status()
    assert state.dead_letters == [] and state.delivered == len(sent.stored)


def test_pacs_once_sends_the_new_study_with_the_pacs_as_retrieve_url(
        exchange: Exchange, tmp_path: Path):
    study = scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "study", 5)
    study_uid = scpkit.study_uid(study[0])
    with start_orthanc(tmp_path / "orthanc") as orthanc:
        orthanc.upload_all(study)
        done = subprocess.run([ADAPTER, "dicom", "--pacs", orthanc.dicomweb_url, "--once",
                               *exchange.adapter_args(tmp_path / "outbox.db")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "5 instance(s) queued" in done.stderr and "5 instance(s) delivered" in done.stderr
        again = subprocess.run([ADAPTER, "dicom", "--pacs", orthanc.dicomweb_url, "--once",
                                *exchange.adapter_args(tmp_path / "outbox.db")],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "0 instance(s) queued" in again.stderr, again.stderr
    headers = {"Authorization": f"Bearer {exchange.token()}", "Accept": "application/dicom+json"}
    r = httpx.get(f"{exchange.base}/dicomweb/studies/{study_uid}/instances", headers=headers)
    assert r.status_code == 200 and len(r.json()) == 5, r.text
    r = httpx.get(f"{exchange.base}/dicomweb/studies/{study_uid}/metadata", headers=headers)
    assert r.status_code == 200, r.text
    urls = [ds["00081190"]["Value"][0] for ds in r.json()]
    assert all(u.startswith(f"{orthanc.dicomweb_url}/studies/{study_uid}/series/")
               for u in urls), urls


def test_listen_or_pacs_is_required(tmp_path: Path):
    done = subprocess.run([ADAPTER, "dicom", "--outbox", str(tmp_path / "o.db")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--listen" in done.stderr
