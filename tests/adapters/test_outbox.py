"""The outbox: durable puts, order per patient, exclusive claims, dead letters."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adapters.outbox import NewMessage, Outbox


def put(box: Outbox, patient: str, n: int) -> int:
    return box.put(patient_key=patient, payload=f'{{"n": {n}}}'.encode(), source="test")


def test_put_survives_reopen_and_claim_gives_oldest_first(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    ids = [put(box, f"p{i}", i) for i in range(3)]
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert [m.id for m in again.claim(10)] == ids
    assert again.claim(10) == []  # leased


def test_a_patients_later_message_waits_for_the_earlier(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    a1, a2, b1 = put(box, "a", 1), put(box, "a", 2), put(box, "b", 1)
    assert [m.id for m in box.claim(10)] == [a1, b1]
    box.retry(a1, "HTTP 503", time.time() + 60)
    assert box.claim(10) == []  # a1 retries later; a2 must not overtake it
    box.done(b1)
    box.retry(a1, "HTTP 503", 0)
    assert [m.id for m in box.claim(10)] == [a1]
    box.done(a1)
    assert [m.id for m in box.claim(10)] == [a2]


def test_dead_letter_status_and_requeue(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    a1, a2 = put(box, "a", 1), put(box, "a", 2)
    [m] = box.claim(10)
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": "bad status",
         "expression": ["Bundle.entry[0].resource.status"]}]}
    box.dead(m.id, json.dumps(outcome))
    # a poison message does not hold its patient's later messages hostage
    assert [m.id for m in box.claim(10)] == [a2]
    box.done(a2)
    state = box.status()
    assert state.depth == 0 and state.delivered == 1
    assert [(d.id, d.error) for d in state.dead_letters] == [
        (a1, "bad status (Bundle.entry[0].resource.status)")]
    assert state.dead_letters[0].outcome == outcome
    assert "refused" in (state.last_error or "")
    assert box.requeue(a1) and not box.requeue(a1)
    assert [m.id for m in box.claim(10)] == [a1]
    assert box.status().dead_letters == []


def test_status_reports_depth_and_oldest_age(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    assert box.status().oldest_age_seconds is None
    put(box, "a", 1)
    time.sleep(0.05)
    put(box, "b", 1)
    state = box.status()
    assert state.depth == 2 and state.oldest_age_seconds >= 0.05


def test_an_unacknowledged_claim_comes_back(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", lease_seconds=0.2)
    m1 = put(box, "a", 1)
    assert [m.id for m in box.claim(1)] == [m1]
    assert box.claim(1) == []
    time.sleep(0.25)  # the lease ran out: the claimer died
    assert [m.id for m in box.claim(1)] == [m1]
    assert box.recover() == 1  # a fresh pusher releases leases at once
    assert [m.id for m in box.claim(1)] == [m1]


def test_two_threads_never_claim_the_same_message(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    for i in range(200):
        put(box, f"p{i % 50}", i)
    seen: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while batch := box.claim(7):
            with lock:
                seen.extend(m.id for m in batch)
            for m in batch:
                box.done(m.id)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == len(set(seen)) == 200
    assert box.status().delivered == 200


PRODUCER = """
import sys
from adapters.outbox import Outbox
box = Outbox(sys.argv[1])
i = 0
while True:
    mid = box.put(patient_key=f"p{i % 7}", payload=b"x" * 2000, source="kill")
    print(mid, flush=True)  # the "acknowledgement": printed only after put returned
    i += 1
"""


def test_every_acknowledged_put_survives_kill_9(tmp_path: Path):
    path = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", PRODUCER, str(path)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    acked: list[int] = []
    assert proc.stdout is not None
    while len(acked) < 150:
        acked.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    box = Outbox(path)
    assert box.status().depth >= len(acked)
    # every acknowledged message can be delivered: drain the outbox
    delivered: set[int] = set()
    while batch := box.claim(100):
        for m in batch:
            delivered.add(m.id)
            box.done(m.id)
    assert set(acked) <= delivered


def test_put_many_is_one_commit_in_order_with_the_sources_memos(tmp_path: Path):
    path = tmp_path / "o.db"
    box = Outbox(path)
    ids = box.put_many([NewMessage("a", b"1", "f"), NewMessage("b", b"2", "f"),
                        NewMessage("a", b"3", "f", kind="merge")],
                       remember={"Patient/1": "identifier=x|1"})
    assert ids == sorted(ids) and len(ids) == 3
    again = Outbox(path)  # committed: another connection sees all of it
    assert again.recall("Patient/1") == "identifier=x|1"
    assert [(m.patient_key, m.payload, m.kind) for m in again.claim(10)] == [
        ("a", b"1", "bundle"), ("b", b"2", "bundle")]


def test_put_many_stores_nothing_when_it_fails(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    bad = NewMessage("b", None, "f")  # type: ignore[arg-type]  # payload NOT NULL
    try:
        box.put_many([NewMessage("a", b"1", "f"), bad], remember={"k": "v"})
    except Exception:
        pass
    else:
        raise AssertionError("a message without payload must not be stored")
    assert box.status().depth == 0 and box.recall("k") is None


def test_hasten_makes_backed_off_messages_due_now(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    a, b = put(box, "a", 1), put(box, "b", 1)
    for m in box.claim(10):
        box.retry(m.id, "ConnectError", time.time() + 3600)
    assert box.claim(10) == []
    assert box.hasten() == 2
    assert [m.id for m in box.claim(10)] == [a, b]
    assert box.hasten() == 0


def test_wait_returns_as_soon_as_a_message_is_put(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    seen = box.version
    assert box.wait(seen, 0.01) is False
    threading.Timer(0.1, lambda: put(box, "a", 1)).start()
    start = time.monotonic()
    assert box.wait(seen, 10) is True
    assert time.monotonic() - start < 5


def test_a_message_after_another_patient_waits_for_that_patients_older_messages(
        tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    old = put(box, "old", 1)
    merge = box.put(patient_key="new", payload=b"{}", kind="merge", source="t", after="old")
    later = put(box, "old", 2)  # queued after the merge: need not wait for it
    assert [m.id for m in box.claim(10)] == [old]
    box.done(old)
    assert [m.id for m in box.claim(10)] == [merge, later]


def test_an_outbox_from_before_after_key_is_upgraded(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE message (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                   "patient_key TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, "
                   "payload BLOB NOT NULL, created REAL NOT NULL, state TEXT NOT NULL "
                   "DEFAULT 'waiting', attempts INTEGER NOT NULL DEFAULT 0, not_before REAL "
                   "NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0, last_error TEXT, "
                   "outcome TEXT)")
        db.execute("INSERT INTO message (patient_key, kind, source, payload, created) "
                   "VALUES ('a', 'bundle', 't', x'7b7d', 0)")
    box = Outbox(path)
    assert [m.patient_key for m in box.claim(10)] == ["a"]
    box.put(patient_key="b", payload=b"{}", source="t", after="a")
    assert box.claim(10) == []  # a is claimed, not done: b waits


def test_done_many_forgets_a_batch_and_counts_it_delivered(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    ids = [put(box, f"p{i}", i) for i in range(5)]
    box.done(ids[0])
    assert [m.id for m in box.claim(10)] == ids[1:]
    box.done_many([ids[1], ids[2], ids[0], 999])  # one already done, one unknown
    box.done_many([])
    state = box.status()
    assert state.delivered == 3 and state.depth == 2


def test_fresh_counts_what_waits_to_be_claimed_and_forgets_a_failed_put(tmp_path: Path):
    """The pusher's view of new messages (Pusher._stow_hold): a put counts until a claim
    takes it; a put that stored nothing does not count at all."""
    box = Outbox(tmp_path / "o.db")
    box.put(patient_key="dicom:1", payload=b"{}", kind="dicom", source="t")
    box.put(patient_key="dicom:2", payload=b"{}", kind="dicom", source="t")
    count, kinds, first, last = box.fresh.snapshot()
    assert (count, kinds) == (2, {"dicom"}) and 0 < first <= last
    with pytest.raises(sqlite3.IntegrityError):  # payload is NOT NULL
        box.put(patient_key="dicom:3", payload=None, kind="dicom", source="t")  # type: ignore[arg-type]
    assert box.fresh.snapshot()[0] == 2
    assert len(box.claim(10)) == 2
    assert box.fresh.snapshot() == (0, frozenset(), 0.0, 0.0)
