"""Shared pieces of the benchmarks: running the exchange as its users do (the
``hie serve`` command on a free local port, a hospital registered with
``hie admin create-organization`` that gets its access tokens with SMART
Backend Services), posting Bundles over HTTP, sampling the server's resident
memory, and percentiles.

The server runs in its own session (process group) so that stopping it also
stops its worker processes, and nothing of a run outlives the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import jwt
import orjson
import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
FHIR_JSON = "application/fhir+json"
#: The hospital the benchmarks push and query as (an organisation id of the registry).
BENCH_ORG = "benchhosp"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hie_command() -> list[str]:
    """The ``hie`` console script of the interpreter running the benchmark."""
    script = Path(sys.executable).parent / "hie"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hie.cli"]


@dataclass
class Hospital:
    """A registered hospital system: its client id and private signing key."""

    client_id: str
    kid: str
    key: ec.EllipticCurvePrivateKey

    @property
    def source(self) -> str:
        """The ``meta.source`` the exchange stamps on this hospital's writes."""
        from hie.context import organization_source

        return organization_source(self.client_id)


def register_hospital(store_url: str, var_dir: Path, org: str = BENCH_ORG) -> Hospital:
    """Register ``org`` with a fresh ES384 key in the store, as an operator
    would (``hie admin create-organization``), before the server starts."""
    key = ec.generate_private_key(ec.SECP384R1())
    kid = f"{org}-bench-1"
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "ES384",
           "use": "sig"}
    var_dir.mkdir(parents=True, exist_ok=True)
    jwks = var_dir / f"{org}-jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    env = {**os.environ, "HIE_STORE_URL": store_url, "HIE_VAR_DIR": str(var_dir)}
    done = subprocess.run([*hie_command(), "admin", "create-organization", "--name",
                           "基准测试医院", "--id", org, "--jwks", str(jwks)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"hie admin create-organization failed: {done.stderr[-2000:]}")
    return Hospital(org, kid, key)


class HospitalAuth(httpx.Auth):
    """Bearer tokens from the exchange's token endpoint (client_credentials
    with a signed client assertion), fetched again shortly before they expire."""

    def __init__(self, hospital: Hospital, url: str, scope: str = "system/*.cruds") -> None:
        self.hospital = hospital
        self.token_url = f"{url}/auth/token"
        self.scope = scope
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {"iss": self.hospital.client_id, "sub": self.hospital.client_id,
                  "aud": self.token_url, "iat": now, "exp": now + 240,
                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.hospital.key, algorithm="ES384",
                          headers={"kid": self.hospital.kid})

    async def token(self) -> str:
        async with self._lock:
            if time.monotonic() > self._expires:
                async with httpx.AsyncClient(timeout=30) as client:
                    resp = await client.post(self.token_url, data={
                        "grant_type": "client_credentials",
                        "client_assertion_type": CLIENT_ASSERTION_TYPE,
                        "client_assertion": self._assertion(), "scope": self.scope})
                if resp.status_code != 200:
                    raise RuntimeError(f"token endpoint: HTTP {resp.status_code} {resp.text}")
                body = resp.json()
                self._token = body["access_token"]
                self._expires = time.monotonic() + int(body.get("expires_in", 300)) - 60
            return self._token

    async def async_auth_flow(self, request: httpx.Request
                              ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.token()}"
        yield request


@dataclass
class Server:
    """A running ``hie serve``; ``base`` is its FHIR base URL; requests made
    with :meth:`client` act as the registered :attr:`hospital`."""

    proc: subprocess.Popen
    url: str
    store_url: str
    log: Path
    hospital: Hospital
    auth: HospitalAuth

    @property
    def base(self) -> str:
        return f"{self.url}/fhir"

    def rss(self) -> int:
        """Resident memory (bytes) of the server process and all its children."""
        total = 0
        for p in _process_tree(self.proc.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server and its children."""
        return process_cpu(self.proc.pid)

    def worker_pids(self) -> list[int]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        return []


@contextlib.contextmanager
def run_server(store_url: str, *, workers: int, log: Path, var_dir: Path,
               timeout: float = 90.0) -> Iterator[Server]:
    """Start ``hie serve`` against ``store_url`` (its keys in ``var_dir``),
    with the benchmark hospital registered, wait for ``/healthz``, and stop it
    (and its workers) on exit."""
    hospital_file = var_dir / "bench-hospital.pem"
    if hospital_file.exists():  # a kept store: the hospital is registered already
        key = serialization.load_pem_private_key(hospital_file.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        hospital = Hospital(BENCH_ORG, f"{BENCH_ORG}-bench-1", key)
    else:
        hospital = register_hospital(store_url, var_dir)
        hospital_file.write_bytes(hospital.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HIE_STORE_URL": store_url, "HIE_BASE_URL": url,
           "HIE_VAR_DIR": str(var_dir)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [*hie_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
        server = Server(proc, url, store_url, log, hospital, HospitalAuth(hospital, url))
        try:
            _wait_healthy(server, timeout)
            yield server
        finally:
            _stop(proc)


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"hie serve exited with {server.proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"hie serve did not become healthy within {timeout:.0f}s "
                       f"(log: {server.log})")


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, *, rate: int = 200) -> Iterator[None]:
    """Sample ``pid`` (and its children) with py-spy while the block runs, writing
    collapsed stacks to ``out`` (nothing happens when ``out`` is None). py-spy is
    in the ``bench`` extra; it needs ptrace rights (root, or
    ``kernel.yama.ptrace_scope=0``)."""
    if out is None:
        yield
        return
    out.unlink(missing_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    proc = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--subprocesses",
                             "--rate", str(rate), "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(1.0)  # let it attach before the measured work starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def profiled(server: Server, out: Path | None, *,
             rate: int = 200) -> contextlib.AbstractContextManager[None]:
    """:func:`py_spy` on the server and its workers."""
    return py_spy(server.proc.pid, out, rate=rate)


def bundle_stream(seed: int, target: int, chunk: int
                  ) -> Iterator[tuple[list[bytes], list[int]]]:
    """Chunks of (Bundle bodies, resource counts) from the generator until
    ``target`` resources."""
    from benchmarks.datagen import generate_bundles

    total, bodies, counts = 0, [], []
    for bundle in generate_bundles(seed, 10**9):
        bodies.append(orjson.dumps(bundle))
        counts.append(len(bundle["entry"]))
        total += counts[-1]
        if len(bodies) == chunk or total >= target:
            yield bodies, counts
            bodies, counts = [], []
        if total >= target:
            return


def top_frames(collapsed: Path, *, own: bool, limit: int = 25,
               prefix: str = "") -> list[tuple[str, float]]:
    """The hottest frames of a py-spy collapsed-stack file: with ``own``, where
    time is spent (the leaf frame); without, which frames it is spent under
    (inclusive, each frame counted once per sample). Shares of all samples."""
    totals: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        picked = frames[-1:] if own else list(dict.fromkeys(frames))
        for f in picked:
            if f.startswith(prefix) or prefix in f:
                totals[f] = totals.get(f, 0) + n
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:limit]
    return [(f, n / samples if samples else 0.0) for f, n in ranked]


def stop_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, a supervisor) into SystemExit, so that the
    ``run_server`` context managers stop the servers they started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL what is left after 15 s."""
    stop_group(proc, signal.SIGTERM, grace=15)


def stop_group(proc: subprocess.Popen, first: int = signal.SIGINT, *,
               grace: float = 10) -> None:
    """Send ``first`` to the process group, SIGKILL what is left after ``grace`` s
    (and any stray process of the group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its children ([] once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children so far (0 once it is gone)."""
    total = 0.0
    for p in _process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class RssSampler:
    """Samples a server's resident memory in a background thread."""

    def __init__(self, server: Server, interval: float = 0.25) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.server.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max(self.samples, default=0) / 2**20


@dataclass
class PostResult:
    bundles: int
    resources: int
    seconds: float
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


async def post_bundles(client: httpx.AsyncClient, base: str, bodies: Sequence[bytes],
                       counts: Sequence[int], *, concurrency: int) -> PostResult:
    """POST transaction Bundles to ``base`` with ``concurrency`` requests in
    flight; every Bundle must be accepted (200), failures are collected."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    failures: list[str] = []

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                resp = await client.post(base, content=bodies[i],
                                         headers={"Content-Type": FHIR_JSON,
                                                  "Accept": FHIR_JSON})
                if resp.status_code != 200:
                    failures.append(f"bundle {i}: HTTP {resp.status_code} {resp.text[:500]}")
            except httpx.HTTPError as exc:
                failures.append(f"bundle {i}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    return PostResult(len(bodies), sum(counts), seconds, failures)


def http_client(server: Server, concurrency: int = 16) -> httpx.AsyncClient:
    """A client acting as the server's benchmark hospital."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits, auth=server.auth)


@dataclass
class LeanResponse:
    status_code: int
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class LeanClient:
    """A keep-alive HTTP/1.1 client on the standard library's ``http.client``,
    acting as the server's benchmark hospital: one connection, one request at
    a time, with the same bearer tokens as :func:`http_client`.

    For latency figures. httpx spends ~0.6 ms of Python per request on this
    kind of machine — more than the server needs for an empty request — so a
    latency taken with it says more about the client than the server; this
    one spends ~0.1 ms. Its calls block the event loop (nothing else runs in
    the benchmark process meanwhile)."""

    def __init__(self, server: Server, timeout: float = 300.0) -> None:
        self.auth = server.auth
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self._prefix = server.url

    async def get(self, url: str, params: Sequence[tuple[str, str]] | None = None,
                  headers: dict[str, str] | None = None) -> LeanResponse:
        if not url.startswith(self._prefix):
            raise ValueError(f"{url} is not on {self._prefix}")
        target = url[len(self._prefix):] or "/"
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        sent = {"Authorization": f"Bearer {await self.auth.token()}", **(headers or {})}
        self._conn.request("GET", target, headers=sent)
        resp = self._conn.getresponse()
        return LeanResponse(resp.status, resp.read(), self._prefix + target)

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def machine() -> str:
    """A one-line description of the machine, for RESULTS.md."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
