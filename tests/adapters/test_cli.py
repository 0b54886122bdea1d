"""``hie-adapter`` as a hospital's operator uses it: options, status, requeue, and the
HL7 v2 listener wired to the outbox and the pusher."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from adapter_exchange import ADAPTER, Exchange, free_port

from adapters.outbox import Outbox


def adapter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ADAPTER, *args], capture_output=True, text=True, timeout=30,
                          env=env)


def test_missing_push_options_are_named(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIE_ADAPTER_")}
    done = adapter("fhir", str(tmp_path), "--outbox", str(tmp_path / "o.db"), env=env)
    assert done.returncode == 2
    assert "--exchange, --client-id, --key, --kid" in done.stderr


def test_status_and_requeue_in_plain_text(tmp_path: Path):
    path = tmp_path / "o.db"
    box = Outbox(path)
    first = box.put(patient_key="a", payload=b"{}", source="fhir-files:x.json")
    box.put(patient_key="b", payload=b"{}", source="fhir-files:y.json")
    box.claim(1)
    box.dead(first, '{"resourceType": "OperationOutcome", "issue": [{"diagnostics": "nope"}]}')
    out = adapter("status", "--outbox", str(path)).stdout
    assert "waiting: 1" in out and "dead letters: 1" in out
    assert f"{first}\tfhir-files:x.json\tnope" in out
    assert adapter("requeue", "999", "--outbox", str(path)).returncode == 1
    assert adapter("requeue", str(first), "--outbox", str(path)).returncode == 0
    assert "waiting: 2" in adapter("status", "--outbox", str(path)).stdout


def mllp(port: int, message: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x0b" + message.encode() + b"\x1c\x0d")
        data = b""
        while not data.endswith(b"\x1c\x0d"):
            chunk = s.recv(4096)
            assert chunk, "connection closed without an ACK"
            data += chunk
    return data.strip(b"\x0b\x1c\x0d").decode()


ADT_A04 = "\r".join([
    "MSH|^~\\&|HIS|H001|HIE|REGION|20240501083000||ADT^A04^ADT_A01|CLI0001|P|2.5"
    "||||||UNICODE UTF-8",
    "EVN|A04|20240501083000",
    "PID|1||CLI777^^^H001^MR||王^五||19800101|M",
]) + "\r"


def test_hl7v2_listener_acks_and_the_patient_reaches_the_exchange(exchange: Exchange,
                                                                 tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen([ADAPTER, "hl7v2", "--listen", f"127.0.0.1:{port}",
                             *exchange.adapter_args(tmp_path / "o.db")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        ack = mllp(port, ADT_A04)
        assert "MSA|AA|CLI0001" in ack
        while exchange.count("Patient", identifier="urn:hie:hospital:mrn|CLI777") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
