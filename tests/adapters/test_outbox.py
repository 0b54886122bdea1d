"""The outbox: durable puts, order per patient, exclusive claims, dead letters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from adapters.outbox import Outbox


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
