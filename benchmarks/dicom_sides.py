"""The other sides of the imaging ingest races (``benchmarks.bench_dicom``): the
tuned Orthanc and a do-nothing pynetdicom SCP, and what the races share (the
files, a figure, sending bodies with several clients, waiting for a count)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import ROOT, free_port, process_cpu, stop_group

sys.path.insert(0, str(ROOT / "tests"))  # the Orthanc peer lives with the tests
from peers.orthanc import (  # noqa: E402
    Orthanc,
    run_storescu,
    start_orthanc,
    storescu,
    storescu_command,
)


@dataclass
class Files:
    """The benchmark's files and the study each belongs to."""

    paths: list[Path]
    study_of: dict[Path, str]
    synthetic: int
    test_files: int

    def by_study(self) -> dict[str, list[Path]]:
        studies: dict[str, list[Path]] = defaultdict(list)
        for p in self.paths:
            studies[self.study_of[p]].append(p)
        return studies

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)


@dataclass
class Figure:
    race: str
    side: str  # "hie" | "orthanc" | "pynetdicom-floor" | "pynetdicom-floor-tuned"
    instances: int
    seconds: float
    server_cpu: float
    notes: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0


class Failed(RuntimeError):
    """A side did not store every instance."""


# -- measuring ----------------------------------------------------------------------


def wait_until(check: Callable[[], int], target: int, timeout: float,
               interval: float = 0.1) -> int:
    """Poll ``check()`` until it reaches ``target``; raise :class:`Failed` after
    ``timeout`` seconds, or when the count has not moved for a third of it."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while True:
        n = check()
        if n >= target:
            return n
        now = time.monotonic()
        if n != last:
            last, moved = n, now
        if now > deadline or now - moved > timeout / 3:
            raise Failed(f"{n} of {target} instances after {timeout:.0f} s")
        time.sleep(interval)


def post_all(bodies: Sequence[bytes], send: Callable[[httpx.Client, bytes], None], *,
             clients: int, headers: dict[str, str]) -> float:
    """Send every body with ``clients`` threads (each its own keep-alive
    connection, taking the next body when done); returns the seconds taken."""
    lock = threading.Lock()
    nxt = iter(range(len(bodies)))
    errors: list[BaseException] = []

    def worker() -> None:
        with httpx.Client(timeout=300, headers=headers) as client:
            while not errors:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                try:
                    send(client, bodies[i])
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    seconds = time.perf_counter() - start
    if errors:
        raise Failed(f"{len(errors)} requests failed; first: {errors[0]!r}")
    return seconds


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# A C-STORE SCP that does nothing but answer success: the most an SCP of that kind
# can take from storescu. "pynetdicom": pynetdicom's own server with its defaults
# (what the adapter used before its acceptor), every storage SOP class in every
# transfer syntax; "acceptor": the adapter's ``adapters.sources.dicom_acceptor``.
_FLOOR_SCP = """
import sys
from adapters.sources.dicom_acceptor import AcceptorServer
from adapters.sources.dicom_scp import ScpSettings, acceptor_settings
settings = acceptor_settings(ScpSettings(ae_title="HIE"))
address = ("127.0.0.1", int(sys.argv[1]))
if sys.argv[2] == "acceptor":
    AcceptorServer(address, settings, lambda request: (0, None)).serve_forever()
else:
    from pynetdicom import AE, evt
    ae = AE(ae_title="HIE")
    for uid in sorted(settings.abstract_syntaxes):
        ae.add_supported_context(uid, sorted(settings.transfer_syntaxes))
    ae.maximum_pdu_size = settings.max_pdu
    ae.start_server(address, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
"""


def scp_floor(files: Files, work: Path, *, kind: str) -> Figure:
    """``storescu`` into a do-nothing SCP of ``kind`` (``pynetdicom`` or ``acceptor``)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR_SCP, str(port), kind], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"the do-nothing {kind} SCP did not start")
            time.sleep(0.1)
        scu = storescu_command(files.paths, port=port, called_aet="HIE", workdir=work / "scu")
        cpu0 = process_cpu(proc.pid)
        start = time.perf_counter()
        run_storescu(scu)
        seconds = time.perf_counter() - start
        return Figure("dimse", f"{kind}-floor", len(files.paths), seconds,
                      process_cpu(proc.pid) - cpu0, {"what": "SCP answering success, no work"})
    finally:
        stop_group(proc, signal.SIGTERM)


# -- Orthanc ----------------------------------------------------------------------------


def orthanc_rest(files: Files, warm: list[Path], work: Path, *, clients: int) -> Figure:
    with start_orthanc(work / "orthanc") as orthanc:
        _orthanc_warm(orthanc, warm, work)
        bodies = [p.read_bytes() for p in files.paths]

        def send(client: httpx.Client, body: bytes) -> None:
            r = client.post(f"{orthanc.http_url}/instances", content=body)
            if r.status_code != 200 or r.json().get("Status") != "Success":
                raise Failed(f"Orthanc POST /instances: HTTP {r.status_code} {r.text[:500]}")

        cpu0 = process_cpu(orthanc.process.pid)
        seconds = post_all(bodies, send, clients=clients,
                           headers={"Content-Type": "application/dicom"})
        cpu = process_cpu(orthanc.process.pid) - cpu0
        stored = orthanc.count_instances() - len(warm)
        if stored != len(files.paths):
            raise Failed(f"Orthanc holds {stored} of {len(files.paths)}")
        return Figure(f"rest-{clients}", "orthanc", len(files.paths), seconds, cpu,
                      {"requests": len(bodies)})


def orthanc_dimse(files: Files, warm: list[Path], work: Path) -> Figure:
    with start_orthanc(work / "orthanc") as orthanc:
        _orthanc_warm(orthanc, warm, work)
        scu = storescu_command(files.paths, port=orthanc.dicom_port, called_aet=orthanc.aet,
                               workdir=work / "scu")
        cpu0 = process_cpu(orthanc.process.pid)
        start = time.perf_counter()
        run_storescu(scu)
        acked = time.perf_counter() - start
        orthanc.wait_instances(len(warm) + len(files.paths), timeout=max(120.0, 20 * acked))
        seconds = time.perf_counter() - start
        cpu = process_cpu(orthanc.process.pid) - cpu0
        return Figure("dimse", "orthanc", len(files.paths), seconds, cpu,
                      {"storescu_done_s": round(acked, 3)})


def _orthanc_warm(orthanc: Orthanc, warm: list[Path], work: Path) -> None:
    storescu(warm[: len(warm) // 2], port=orthanc.dicom_port, called_aet=orthanc.aet,
             workdir=work / "scu-warm")
    orthanc.upload_all(warm[len(warm) // 2:])
    orthanc.wait_instances(len(warm), timeout=60)
