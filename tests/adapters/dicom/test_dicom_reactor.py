"""The SCP's associations wait for work instead of napping (``dicom_reactor``): faster
C-STOREs, the same releases, aborts and idle cost as pynetdicom's own loops."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import scpkit
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from adapters.sources import dicom_reactor, dicom_scp

AET = "HIE_TEST_SCP"


def serve(*, prompt: bool, on_store: Callable[[Any], int] = lambda event: 0) -> Any:
    """A do-nothing C-STORE SCP built like the adapter's, with or without prompt loops."""
    ae = dicom_scp.make_ae(dicom_scp.ScpSettings(ae_title=AET))
    handlers = [(evt.EVT_C_STORE, on_store)]
    if prompt:
        handlers.append((evt.EVT_CONN_OPEN, lambda event: dicom_reactor.make_prompt(event.assoc)))
    server = ae.make_server(("127.0.0.1", 0), evt_handlers=handlers,
                            server_class=dicom_scp.NoDelayServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ae._servers.append(server)  # server.shutdown() takes itself off this list
    return server


@pytest.fixture
def prompt_scp() -> Iterator[Any]:
    server = serve(prompt=True)
    try:
        yield server
    finally:
        server.shutdown()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_adapter_gives_its_associations_prompt_loops(tmp_path: Path):
    """This pynetdicom's loops are the ones ``make_prompt`` knows: an upgrade that
    changes them fails here rather than silently bringing the naps back."""
    seen = []

    class Memory:
        def put(self, **_: Any) -> int:
            return 1

    server = dicom_scp.start("127.0.0.1", 0, outbox=Memory(),
                             settings=dicom_scp.ScpSettings(ae_title=AET))
    original = dicom_scp.StoreHandler.__call__

    def spy(self: dicom_scp.StoreHandler, event: Any) -> Any:
        seen.append(("_run_reactor" in vars(event.assoc), "run" in vars(event.assoc.dul)))
        return original(self, event)

    dicom_scp.StoreHandler.__call__ = spy  # type: ignore[method-assign]
    try:
        sent = scpkit.storescu([scpkit.TEST_FILES / "CT_small.dcm"],
                               port=server.server_address[1], called_aet=AET,
                               workdir=tmp_path)
    finally:
        dicom_scp.StoreHandler.__call__ = original  # type: ignore[method-assign]
        server.shutdown()
    assert len(sent.stored) == 1 and seen == [(True, True)]


def _timed(server: Any, files: list[Path], workdir: Path) -> float:
    start = time.perf_counter()
    sent = scpkit.storescu(files, port=server.server_address[1], called_aet=AET,
                           workdir=workdir)
    elapsed = time.perf_counter() - start
    assert len(sent.stored) == len(files), sent.output[-2000:]
    return elapsed


def test_c_stores_are_answered_without_pynetdicoms_naps(tmp_path: Path):
    """``storescu`` waits for each response before sending the next instance; with
    pynetdicom's loops every instance meets a 1 ms nap in each of them."""
    files = scpkit.copies(scpkit.TEST_FILES / "MR_small.dcm", tmp_path / "f", 200)
    times: dict[bool, list[float]] = {True: [], False: []}
    for run, prompt in enumerate((False, True, False, True)):  # alternate: a shared machine
        server = serve(prompt=prompt)
        try:
            times[prompt].append(_timed(server, files, tmp_path / f"send{run}"))
        finally:
            server.shutdown()
    assert min(times[True]) < 0.75 * min(times[False]), times


def test_release_and_abort_end_the_association_and_leave_no_descriptor(
        prompt_scp: Any):
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    port = prompt_scp.server_address[1]

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    def once(end: str) -> None:
        assoc = ae.associate("127.0.0.1", port, ae_title=AET)
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release() if end == "release" else assoc.abort()
        assert wait_for(lambda: not prompt_scp.active_associations)

    once("release")
    before = descriptors()
    for i in range(10):
        once("release" if i % 2 else "abort")
    assert wait_for(lambda: descriptors() <= before), (before, descriptors())


def test_an_idle_association_does_not_spin(prompt_scp: Any):
    ae = AE(ae_title="IDLESCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", prompt_scp.server_address[1], ae_title=AET)
    assert assoc.is_established
    try:
        time.sleep(0.1)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(1.0)
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
    finally:
        assoc.release()
    # pynetdicom's own loops wake 1,000 times a second each, a few % of a core for
    # the SCP's and this SCU's association together; a loop that spins takes a core
    assert used < 0.3, f"{used:.0%} of a core while idle"
