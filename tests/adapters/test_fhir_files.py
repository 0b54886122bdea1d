"""``hie-adapter fhir``: files in, resources in a real exchange, exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from adapter_exchange import ADAPTER, Exchange, free_port, hospital_key, start_exchange

from adapters.outbox import NewMessage, Outbox
from adapters.sources.fhir_files import FhirFolder

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


class CountingOutbox(Outbox):
    """The real outbox, counting its commits of new messages."""

    commits = 0

    def put_many(self, messages: Iterable[NewMessage], *,
                 remember: Mapping[str, str] | None = None) -> list[int]:
        self.commits += 1
        return super().put_many(messages, remember=remember)


def test_one_commit_per_file_and_transaction_bundles_queued_as_their_bytes(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    ndjson(folder / "Patient.ndjson", [patient(f"cp{i}", f"C{i}") for i in range(4)])
    ndjson(folder / "Observation.ndjson", [observation(f"co{i}", f"Patient/cp{i}", i)
                                           for i in range(4)])
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Patient",
                     "identifier": [{"system": MRN, "value": "C9"}]},
        "request": {"method": "PUT", "url": f"Patient?identifier={MRN}|C9"}}]}
    raw = json.dumps(transaction, indent=1).encode()
    (folder / "t.json").write_bytes(b"\xef\xbb\xbf" + raw)  # with a BOM, as some tools write
    box = CountingOutbox(tmp_path / "o.db")
    FhirFolder(folder, box, progress=False).run_once()
    assert box.commits == 3  # one per file, not one per message
    messages = []
    while batch := box.claim(100):
        messages += batch
        for m in batch:
            box.done(m.id)
    assert len(messages) == 9
    assert raw in [m.payload for m in messages]  # not re-serialised
    # the Observations (read after the Patients) refer to them by identifier
    obs = [json.loads(m.payload) for m in messages if b"Observation" in m.payload]
    refs = {e["resource"]["subject"]["reference"] for b in obs for e in b["entry"]}
    assert refs == {f"Patient?identifier={MRN}|C{i}" for i in range(4)}


def test_resources_without_identifier_are_idempotent_with_an_id_system(exchange: Exchange,
                                                                       tmp_path: Path):
    """With ``--id-system``, a resource without identifier is a conditional update on its
    local id (``system|Type/id``): the same export read twice writes it once."""
    folder, outbox = tmp_path / "ids", tmp_path / "outbox.db"
    folder.mkdir()
    bare = [observation(f"io{i}", "Patient/ip1", i) for i in range(3)]
    for r in bare:
        del r["identifier"]
    ndjson(folder / "Patient.ndjson", [patient("ip1", "I1")])
    ndjson(folder / "Observation.ndjson", bare)
    system = "urn:oid:1.2.156.adapt.his-export"
    first = run_adapter(exchange, folder, outbox, "--id-system", system)
    assert first.returncode == 0, first.stderr
    assert "without identifier" not in first.stderr
    assert exchange.count("Observation", identifier=f"{system}|Observation/io1") == 1
    for f in (folder / ".done").iterdir():  # the same export again
        shutil.copy(f, folder / f.name)
    again = run_adapter(exchange, folder, outbox, "--id-system", system)
    assert again.returncode == 0, again.stderr
    assert exchange.count("Observation", identifier=f"{system}|") == 3
    assert exchange.count("Observation", **{"subject:Patient.identifier": f"{MRN}|I1"}) == 3


def test_references_are_rewritten_wherever_they_are_and_nothing_else(tmp_path: Path):
    folder = tmp_path / "refs"
    folder.mkdir()
    box = Outbox(tmp_path / "o.db")
    source = FhirFolder(folder, box, progress=False)
    box.remember(f"{folder.resolve()}:Patient/earlier", f"identifier={MRN}|E1")
    pat = patient("p1", "R1")
    obs = observation("o1", "Patient/p1", 1) | {
        "performer": [{"reference": "Practitioner/d\"r"}, {"display": "no reference"}],
        "note": [{"text": '"reference":"Patient/p1" is only text'}],
        "hasMember": [{"reference": "http://his.example/Observation/o2"}],
        "focus": [{"reference": "Patient/earlier"}, {"reference": "Patient/unknown"}]}
    doc = {"resourceType": "Practitioner", "id": 'd"r', "name": [{"text": "李医生"}]}
    member = observation("o2", "Patient/p1", 2)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": pat}, {"resource": obs}, {"resource": doc},
        {"fullUrl": "http://his.example/Observation/o2", "resource": member}]}
    (folder / "c.json").write_text(json.dumps(bundle, ensure_ascii=False))
    [(_, payload, n)] = source.messages(folder / "c.json")
    out = json.loads(payload)
    assert n == 4
    urls = [e["fullUrl"] for e in out["entry"]]
    o = out["entry"][1]["resource"]
    assert o["subject"] == {"reference": urls[0]}
    assert o["performer"] == [{"reference": urls[2]}, {"display": "no reference"}]
    assert o["note"] == [{"text": '"reference":"Patient/p1" is only text'}]
    assert o["hasMember"] == [{"reference": urls[3]}]
    assert o["focus"] == [{"reference": f"Patient?identifier={MRN}|E1"},
                          {"reference": "Patient/unknown"}]
    assert out["entry"][2]["resource"]["name"] == [{"text": "李医生"}]
    assert "id" not in out["entry"][2]["resource"]
