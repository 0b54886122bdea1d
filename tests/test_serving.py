"""``hie serve --workers N`` (hie/serving.py): workers take turns accepting, a
worker that dies is replaced, and the whole server stops on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hie.serving import Board


def test_the_board_reports_the_least_loaded_other_live_worker():
    board = Board(3)
    assert board.least_other(0) is None  # nobody else started
    board.set(0, 5)
    board.set(1, 2)
    assert board.least_other(0) == 2
    assert board.least_other(1) == 5
    board.set(2, 0)
    assert board.least_other(0) == 0
    board.set(2, -1)  # gone
    assert board.least_other(0) == 2


def test_the_board_notes_once_that_every_worker_was_up():
    board = Board(2)
    board.set(0, 0)
    assert not board.started()  # the second worker is still starting
    board.set(1, 3)
    assert board.started()
    board.set(1, -1)  # a worker restarting later does not make the others wait
    assert board.started()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out += [int(c) for c in children]
    return out


def _workers(pid: int, port: int) -> list[int]:
    """The worker processes of the server: its children that hold the
    listening socket (not multiprocessing's helper)."""
    out = []
    for child in _children(pid):
        with contextlib.suppress(OSError):
            inodes = _socket_inodes(child)
            if any(lp == port and st == "0A" and ino in inodes
                   for lp, _, st, ino in _tcp_table()):
                out.append(child)
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _tcp_table() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        rows.append((int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3], f[9]))
    return rows


def _established(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` holds."""
    inodes = _socket_inodes(pid)
    return sum(1 for lp, _, st, ino in _tcp_table()
               if lp == port and st == "01" and ino in inodes)


def _get(sock: socket.socket, path: str = "/healthz") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def _serve(tmp_path: Path, port: int, workers: int = 2) -> subprocess.Popen:
    """``hie serve --workers N`` on a fresh store, in a session of its own."""
    env = {**os.environ, "HIE_STORE_URL": f"sqlite:///{tmp_path}/hie.db",
           "HIE_BASE_URL": f"http://127.0.0.1:{port}", "HIE_VAR_DIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "hie", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers),
                             "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _both_serving(pid: int, port: int) -> bool:
    """Whether both workers have started serving: with two connections open,
    each holds one (a worker still starting up takes none)."""
    with contextlib.ExitStack() as stack:
        try:
            socks = [stack.enter_context(socket.create_connection(("127.0.0.1", port),
                                                                  timeout=5))
                     for _ in range(2)]
            if not all(_get(s).endswith(b"200 OK") for s in socks):
                return False
        except OSError:
            return False
        return sorted(_established(w, port) for w in _workers(pid, port)) == [1, 1]


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    port = _free_port()
    proc = _serve(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            if len(_workers(proc.pid, port)) == 2 and _both_serving(proc.pid, port):
                break
            time.sleep(0.2)
        else:
            pytest.fail("hie serve --workers 2 did not start")
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_connections_arriving_together_are_shared_between_the_workers(two_workers):
    proc, port = two_workers
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    try:
        assert all(_get(s).endswith(b"200 OK") for s in socks)
        workers = _workers(proc.pid, port)
        held = sorted(_established(w, port) for w in workers)
        # uvicorn's own workers split such a burst 8/0, 7/1 or 6/2 most of the time
        assert held == [4, 4], held
    finally:
        for s in socks:
            s.close()


def test_connections_made_while_the_workers_start_are_shared_too(tmp_path: Path):
    """Connections made as soon as the port listens wait until both workers
    are up; otherwise the first worker up would keep them all."""
    port = _free_port()
    proc = _serve(tmp_path, port)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while len(socks) < 8 and time.monotonic() < deadline:
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=60))
            except ConnectionRefusedError:
                time.sleep(0.01)
        assert len(socks) == 8
        assert all(_get(s).endswith(b"200 OK") for s in socks)
        held = sorted(_established(w, port) for w in _workers(proc.pid, port))
        assert held == [4, 4], held
    finally:
        for s in socks:
            s.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_dead_worker_is_replaced_and_sigterm_stops_everything(two_workers):
    proc, port = two_workers
    first = _workers(proc.pid, port)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _workers(proc.pid, port)
        if len(now) == 2 and first[0] not in now:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the dead worker was not replaced")
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert _get(s).endswith(b"200 OK")
    workers = _workers(proc.pid, port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(40) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0


def test_workers_that_cannot_start_stop_the_server(tmp_path: Path):
    env = {**os.environ, "HIE_STORE_URL": "nosuch://store", "HIE_VAR_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "hie", "serve", "--host", "127.0.0.1",
                           "--port", str(_free_port()), "--workers", "2",
                           "--log-level", "warning"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3  # uvicorn's STARTUP_FAILURE, as with one worker
    assert "unsupported store URL scheme" in done.stderr
    assert "workers keep dying at start" in done.stderr
