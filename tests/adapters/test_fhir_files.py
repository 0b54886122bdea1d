"""``hie-adapter fhir``: files in, resources in a real exchange, exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from adapter_exchange import ADAPTER, Exchange, free_port, hospital_key, start_exchange

MRN = "urn:oid:1.2.156.adapt.files"
LAB = "urn:oid:1.2.156.adapt.lab"
KILL_LAB = "urn:oid:1.2.156.adapt.lab.kill"


def patient(local_id: str, mrn: str) -> dict:
    return {"resourceType": "Patient", "id": local_id,
            "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": "李", "given": [mrn]}], "gender": "female"}


def observation(local_id: str, subject: str, n: int, system: str = LAB) -> dict:
    return {"resourceType": "Observation", "id": local_id, "status": "final",
            "identifier": [{"system": system, "value": local_id}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": subject},
            "valueQuantity": {"value": 120 + n, "unit": "g/L"}}


def ndjson(path: Path, resources: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in resources))


def run_adapter(exchange: Exchange, folder: Path, outbox: Path,
                *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ADAPTER, "fhir", str(folder), *exchange.adapter_args(outbox), *args],
                          capture_output=True, text=True, timeout=60)


def write_backfill(folder: Path, prefix: str) -> None:
    folder.mkdir()
    ndjson(folder / "Patient.ndjson", [patient(f"{prefix}p{i}", f"{prefix}{i}")
                                       for i in range(3)])
    ndjson(folder / "Observation.ndjson", [
        observation(f"{prefix}o{i}-{k}", f"Patient/{prefix}p{i}", k)
        for i in range(3) for k in range(2)])
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://his.example/Patient/x9", "resource": patient("x9", f"{prefix}9")},
        {"resource": observation(f"{prefix}o9", "http://his.example/Patient/x9", 9)}]}
    (folder / "visit.json").write_text(json.dumps(collection))
    (folder / "broken.json").write_text("{not json")


def test_backfill_then_rerun_writes_no_duplicates(exchange: Exchange, tmp_path: Path):
    folder, outbox = tmp_path / "export", tmp_path / "outbox.db"
    write_backfill(folder, "B")
    done = run_adapter(exchange, folder, outbox)
    assert done.returncode == 1, done.stderr  # the broken file is reported
    assert "failed: broken.json" in done.stderr and "3 file(s) queued" in done.stderr
    assert sorted(p.name for p in (folder / ".done").iterdir()) == [
        "Observation.ndjson", "Patient.ndjson", "visit.json"]
    assert (folder / ".failed" / "broken.json.reason.txt").read_text().startswith("file: not")
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []
    mrns = [f"{MRN}|B{i}" for i in (0, 1, 2, 9)]
    labs = [f"{LAB}|Bo{i}-{k}" for i in range(3) for k in range(2)] + [f"{LAB}|Bo9"]
    assert exchange.count("Patient", identifier=",".join(mrns)) == 4
    assert exchange.count("Observation", identifier=",".join(labs)) == 7
    before = (exchange.count("Patient"), exchange.count("Observation"))
    # observations point at the exchange's patients, found through the identifiers
    assert exchange.count("Observation", **{"subject:Patient.identifier": f"{MRN}|B1"}) == 2
    # the same export dropped again (a re-send after a crash): nothing new
    for f in (folder / ".done").iterdir():
        shutil.copy(f, folder / f.name)
    again = run_adapter(exchange, folder, outbox)
    assert again.returncode == 0, again.stderr
    assert (exchange.count("Patient"), exchange.count("Observation")) == before


def test_refused_bundle_is_a_dead_letter_and_can_be_requeued(exchange: Exchange,
                                                            tmp_path: Path):
    folder, outbox = tmp_path / "in", tmp_path / "outbox.db"
    folder.mkdir()
    bad = patient("d1", "DEAD1") | {"gender": "unknown-value"}
    ndjson(folder / "Patient.ndjson", [bad])
    done = run_adapter(exchange, folder, outbox)
    assert done.returncode == 1 and "1 dead letter(s)" in done.stderr
    status = subprocess.run([ADAPTER, "status", "--outbox", str(outbox), "--json"],
                            capture_output=True, text=True)
    dead = json.loads(status.stdout)["dead_letters"]
    assert len(dead) == 1 and "gender" in dead[0]["error"].lower()
    # fix the cause (here: the message itself) and requeue
    with sqlite3.connect(outbox) as db:
        fixed = json.loads(db.execute("SELECT payload FROM message").fetchone()[0])
        fixed["entry"][0]["resource"]["gender"] = "female"
        db.execute("UPDATE message SET payload = ?", (json.dumps(fixed).encode(),))
    requeue = subprocess.run([ADAPTER, "requeue", str(dead[0]["id"]), "--outbox", str(outbox)],
                             capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    assert run_adapter(exchange, folder, outbox).returncode == 0
    assert exchange.count("Patient", identifier=f"{MRN}|DEAD1") == 1


def test_kill_9_mid_backfill_then_restart_delivers_everything_once(exchange: Exchange,
                                                                  tmp_path: Path):
    folder, outbox = tmp_path / "big", tmp_path / "outbox.db"
    folder.mkdir()
    patients = 60
    for i in range(patients):  # one file per patient: the kill lands between files
        ndjson(folder / f"k{i:03}.ndjson", [
            patient(f"kp{i}", f"K{i}"),
            *(observation(f"ko{i}-{k}", f"Patient/kp{i}", k, KILL_LAB) for k in range(3))])
    proc = subprocess.Popen([ADAPTER, "fhir", str(folder), *exchange.adapter_args(outbox)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # kill once some, not all, files are done
        done_dir = folder / ".done"
        if done_dir.exists() and len(list(done_dir.iterdir())) >= 10:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = len(list(folder.glob("*.ndjson")))
    assert 0 < left < patients, "the kill did not land mid-backfill"
    again = run_adapter(exchange, folder, outbox)
    assert again.returncode == 0, again.stderr
    assert not list(folder.glob("*.ndjson"))
    assert exchange.count("Patient", identifier=",".join(f"{MRN}|K{i}"
                                                         for i in range(patients))) == patients
    assert exchange.count("Observation", identifier=f"{KILL_LAB}|") == patients * 3


def test_watch_picks_up_new_files_with_settings_from_the_environment(exchange: Exchange,
                                                                    tmp_path: Path):
    folder = tmp_path / "drop"
    folder.mkdir()
    env = os.environ | {"HIE_ADAPTER_EXCHANGE": exchange.base,
                        "HIE_ADAPTER_CLIENT_ID": exchange.client_id,
                        "HIE_ADAPTER_KEY_FILE": str(exchange.key_file),
                        "HIE_ADAPTER_KID": exchange.kid,
                        "HIE_ADAPTER_OUTBOX": str(tmp_path / "outbox.db")}
    proc = subprocess.Popen([ADAPTER, "fhir", str(folder), "--watch", "--interval", "0.1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        system = MRN
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": patient("w1", "W1"),
            "request": {"method": "PUT", "url": f"Patient?identifier={system}|W1"}}]}
        transaction["entry"][0]["resource"].pop("id")
        # dropped atomically (written aside, then renamed), as exports should be
        (folder / "w1.json.part").write_text(json.dumps(transaction))
        (folder / "w1.json.part").rename(folder / "w1.json")
        deadline = time.monotonic() + 15
        while exchange.count("Patient", identifier=f"{MRN}|W1") == 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert (folder / ".done" / "w1.json").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_exchange_down_then_back_delivers_the_backfill(tmp_path: Path):
    """The adapter starts while the exchange is down; it retries until it is up."""
    folder, state = tmp_path / "late", tmp_path / "exchange"
    folder.mkdir()
    state.mkdir()
    ndjson(folder / "Patient.ndjson", [patient(f"lp{i}", f"L{i}") for i in range(5)])
    port = free_port()
    hospital_key(state, "adapt-key-1")
    args = ["--exchange", f"http://127.0.0.1:{port}", "--client-id", "adapt", "--key",
            str(state / "hospital.pem"), "--kid", "adapt-key-1", "--outbox",
            str(tmp_path / "outbox.db")]
    proc = subprocess.Popen([ADAPTER, "fhir", str(folder), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    late = None
    try:
        time.sleep(1.0)
        assert proc.poll() is None  # waiting, not giving up
        late = start_exchange(state, port=port)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert late.count("Patient", identifier=f"{MRN}|") == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if late:
            late.stop()
