"""``kill -9`` of ``hie-adapter hl7v2 --listen`` mid-stream while the exchange is down,
then both back: every message the LIS got an ``AA`` for reaches the exchange exactly
once in effect.

Everything is real: the adapter command in a subprocess with its SQLite outbox, a
LIS sending ORU^R01 over MLLP with python-hl7's asyncio client (``hl7.mllp``), and
``hie serve`` started only after the first crash. The LIS behaves as HL7's original
mode asks of a sender: it sends one message at a time, and a message without an ACK
(the adapter died before answering) is sent again once the adapter is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import hl7kit
from adapter_exchange import ADAPTER, Exchange, free_port, hospital_key, start_exchange
from hl7.mllp import open_hl7_connection

from adapters.outbox import Outbox

MESSAGES = 60  # ORU^R01, each with its own filler order number
PATIENTS = 7
OBX = 5  # OBX segments of hl7kit.oru
ORDER_SYSTEM = "urn:hie:hospital:filler-order"  # the listener's default
MRN_SYSTEM = "urn:hie:hospital:mrn"


def message(i: int) -> tuple[str, bytes]:
    control = f"KILL{i:04d}"
    text = hl7kit.oru(control=control, mrn=f"KMRN{i % PATIENTS}", placer=f"KP{i:04d}",
                      filler=f"KF{i:04d}")
    return control, hl7kit.encode(text)


class Lis:
    """A laboratory system: sends its messages in order over one MLLP connection,
    each until it gets an ACK; reconnects (bounded) when the adapter is gone."""

    def __init__(self, port: int, messages: list[tuple[str, bytes]]) -> None:
        self.port = port
        self.messages = messages
        self.acked: list[str] = []  # control ids with an AA, in order
        self.refused: list[str] = []  # anything but AA
        self.unanswered = 0  # sends that got no ACK (connection lost)
        self.limit = len(messages)  # send messages[:limit] only
        self.on_sent: Callable[[int], None] = lambda i: None  # message i sent, no ACK yet

    async def run(self, deadline: float) -> None:
        i = 0
        while i < len(self.messages):
            while i >= self.limit:
                assert time.monotonic() < deadline, "the LIS was never let go on"
                await asyncio.sleep(0.02)
            try:
                reader, writer = await asyncio.wait_for(
                    open_hl7_connection("127.0.0.1", self.port), 2)
            except (OSError, TimeoutError):
                assert time.monotonic() < deadline, "the adapter did not come back"
                await asyncio.sleep(0.05)
                continue
            try:
                while i < self.limit:
                    control, raw = self.messages[i]
                    writer.writeblock(raw)
                    await writer.drain()
                    self.on_sent(i)
                    ack = await asyncio.wait_for(reader.readmessage(), 10)
                    msa = ack.segment("MSA")
                    if str(msa[1]) == "AA" and str(msa[2]) == control:
                        self.acked.append(control)
                    else:
                        self.refused.append(str(ack))
                    i += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                self.unanswered += 1  # no ACK: this message is sent again
            finally:
                writer.close()


class Adapter:
    """``hie-adapter hl7v2 --listen`` as the hospital runs it."""

    def __init__(self, port: int, args: list[str], log: Path) -> None:
        self.port, self.args, self.log = port, args, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [ADAPTER, "hl7v2", "--listen", f"127.0.0.1:{self.port}", *self.args],
                stdout=out, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        """Start it and wait until it listens."""
        self.proc = self._spawn()
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the adapter did not listen in time"
                await asyncio.sleep(0.05)

    def kill_9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_stream_with_the_exchange_down_then_both_back(tmp_path: Path):
    state = tmp_path / "exchange"
    state.mkdir()
    hospital_key(state, "adapt-key-1")  # registered when the exchange first starts
    exchange_port, mllp_port = free_port(), free_port()
    outbox_path = tmp_path / "outbox.db"
    args = ["--exchange", f"http://127.0.0.1:{exchange_port}", "--client-id", "adapt",
            "--key", str(state / "hospital.pem"), "--kid", "adapt-key-1",
            "--outbox", str(outbox_path)]
    adapter = Adapter(mllp_port, args, tmp_path / "adapter.log")
    lis = Lis(mllp_port, [message(i) for i in range(MESSAGES)])
    exchange: Exchange | None = None
    sender: asyncio.Task[None] | None = None
    try:
        # 1. The exchange is down; the adapter ACKs into its outbox and is killed
        #    mid-stream, with everything it acknowledged still undelivered.
        await adapter.start()
        lis.limit = 40
        # killed while message 20 is on its way: before, while or after it is stored
        lis.on_sent = lambda i: adapter.kill_9() if i == 20 and not adapter.kills else None
        sender = asyncio.create_task(lis.run(time.monotonic() + 120))
        await until(lambda: adapter.kills == 1 and lis.unanswered == 1, "the first kill")
        acked = len(lis.acked)  # 20, or 21 if message 20's ACK got out before the kill
        assert acked in (20, 21) and lis.acked == [c for c, _ in lis.messages[:acked]]
        with Outbox(outbox_path) as box:
            status = box.status()
        # every AA is on disk; message 20 may be there too, without its ACK
        assert acked <= status.depth <= 21
        assert status.delivered == 0 and "ConnectError" in (status.last_error or "")

        # 2. The adapter is back (the exchange still down); the LIS sends again what was
        #    not acknowledged and goes on.
        await adapter.start()
        await until(lambda: len(lis.acked) == lis.limit, f"{lis.limit} ACKs")

        # 3. The exchange is back; once the first message is through, the LIS sends the
        #    rest while the pusher drains, and the adapter is killed once more, mid-push.
        exchange = await asyncio.to_thread(start_exchange, state, port=exchange_port)
        up = exchange
        await until(lambda: up.count("DiagnosticReport") > 0, "the first delivery")
        lis.on_sent = lambda i: adapter.kill_9() if i == 50 and adapter.kills == 1 else None
        lis.limit = MESSAGES
        await until(lambda: adapter.kills == 2 and lis.unanswered == 2, "the second kill")
        await adapter.start()
        await asyncio.wait_for(sender, 60)

        # 4. Everything acknowledged arrives, once.
        def drained() -> bool:
            with Outbox(outbox_path) as box:
                return box.status().depth == 0
        await until(drained, "the outbox to drain", seconds=90)

        assert lis.refused == []
        assert lis.unanswered >= 1  # a send was cut by a kill (else this tested no crash)
        assert lis.acked == [c for c, _ in lis.messages]  # each acknowledged, in order
        with Outbox(outbox_path) as box:
            assert box.status().dead_letters == []
        fillers = ",".join(f"{ORDER_SYSTEM}|KF{i:04d}" for i in range(MESSAGES))
        assert up.count("DiagnosticReport") == MESSAGES
        assert up.count("DiagnosticReport", identifier=fillers) == MESSAGES
        assert up.count("Observation") == MESSAGES * OBX
        assert up.count("Patient") == PATIENTS
        assert up.count("Patient", identifier=",".join(
            f"{MRN_SYSTEM}|KMRN{p}" for p in range(PATIENTS))) == PATIENTS
    finally:
        if sender is not None and not sender.done():
            sender.cancel()
        adapter.stop()
        if exchange is not None:
            exchange.stop()
