"""Adapters benchmark: what a hospital's ``hie-adapter`` delivers per second,
beside the exchange's own direct ingest rate, in one run against one server.

One ``hie serve`` (one worker, fresh SQLite store, the benchmark hospital
registered as in ``common.py``) receives, one after the other:

1a. **direct ingest** (the reference), first half: generated transaction Bundles
   posted over HTTP as ``bench_ingest`` does (the first few untimed, to warm the
   worker up), 8 in flight;
2. **FHIR NDJSON backfill**: the same kind and amount of generated resources
   (another seed, so other patients) written as NDJSON exports, pushed by
   ``hie-adapter fhir PATH`` (a subprocess with its own outbox in the temporary
   folder), timed from the start of the command until the exchange holds every
   resource (counted with ``_summary=count``); the goal of issue 5 is at least 0.8
   of direct ingest (1a and 1b together);
1b. **direct ingest**, second half. Ingest slows down as the store grows (by a
   fifth or more between the halves here), so the reference is measured on both
   sides of the backfill: both paths write into stores of the same sizes, and
   the same ``_summary=count`` poll that waits for the adapters runs beside it, so
   both pay the same measuring cost on the exchange;
3. **HL7 v2 ORU^R01**: lab results sent over real MLLP connections to
   ``hie-adapter hl7v2 --listen`` (a subprocess), each message waiting for its
   ACK, timed from the first message until every Observation is in the exchange.

The NDJSON files hold whole patients (a patient-level bulk export): the
generated Encounters refer to Conditions, which per-type files could only refer
to by local ids the exchange does not know. The generated resources other than
Patient carry no identifier, so the source sends them as plain ``POST``s, as
direct ingest does.

The exchange and the adapter share the machine (two cores here): ``--profile``
samples both with py-spy during the backfill, and every phase reports the CPU
seconds each side used.

Run: ``.venv/bin/python -m benchmarks.bench_adapters`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives import serialization

from benchmarks.common import (
    OUT,
    ROOT,
    Server,
    free_port,
    http_client,
    machine,
    post_bundles,
    process_cpu,
    profiled,
    run_server,
    stop_group,
    stop_on_sigterm,
    top_frames,
)
from benchmarks.datagen import generate_bundles, iter_resources

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
#: OBX lines of one generated ORU (local codes of adapters/hl7v2/maps/loinc.csv).
OBX_PER_ORU = 5


@dataclass
class Phase:
    name: str
    resources: int
    seconds: float
    rate: float
    messages: int = 0
    messages_per_s: float = 0.0
    command_seconds: float = 0.0
    failures: int = 0
    #: CPU seconds (user + system) the exchange and the adapter process used in the phase
    server_cpu: float = 0.0
    adapter_cpu: float = 0.0


def adapter_command(profile: Path | None = None) -> list[str]:
    """The ``hie-adapter`` console script of the interpreter running the benchmark; with
    ``profile``, run under ``py-spy record`` writing collapsed stacks there."""
    script = Path(sys.executable).parent / "hie-adapter"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "adapters.cli"]
    if profile is None:
        return cmd
    profile.unlink(missing_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    return [str(spy), "record", "--rate", "200", "--format", "raw", "--subprocesses",
            "--output", str(profile), "--", *cmd]


class CpuWatch:
    """The adapter's CPU seconds, sampled until it exits (psutil cannot read a reaped
    process, so the last sample before exit counts)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.seconds = max(self.seconds, process_cpu(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.seconds


def counts(server: Server, types: list[str]) -> dict[str, int]:
    """Resources of each type in the exchange (``_summary=count``), as the hospital.

    One keep-alive client and one token for the whole run: the polls of
    :func:`wait_for` run beside the adapter on the same two cores, and a new client
    and event loop per poll cost the machine more than the poll itself."""
    global _poll_client, _poll_token
    if _poll_client is None:
        _poll_client = httpx.Client(timeout=60)
    for fresh in (False, True):
        if fresh or not _poll_token:
            _poll_token = asyncio.run(server.auth.token())
        out: dict[str, int] = {}
        for t in types:
            resp = _poll_client.get(f"{server.base}/{t}", params={"_summary": "count"},
                                    headers={"Accept": "application/fhir+json",
                                             "Authorization": f"Bearer {_poll_token}"})
            if resp.status_code == 401 and not fresh:
                break  # the token expired: fetch another one
            resp.raise_for_status()
            out[t] = int(resp.json()["total"])
        else:
            return out
    raise AssertionError("unreachable")


_poll_client: httpx.Client | None = None
_poll_token = ""
POLL_SECONDS = 0.1


@contextlib.contextmanager
def polled(server: Server, rtype: str) -> Iterator[None]:
    """Count ``rtype`` every ``POLL_SECONDS`` while the block runs, as :func:`wait_for`
    does while an adapter delivers: direct ingest pays the same measuring cost on the
    exchange (a few per cent of its CPU) as the paths it is compared with."""
    stop = threading.Event()

    def run() -> None:  # a thread of its own: the caller may be inside an event loop
        counts(server, [rtype])
        while not stop.wait(POLL_SECONDS):
            counts(server, [rtype])

    thread = threading.Thread(target=run, name="poll", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def wait_for(server: Server, target: dict[str, int], proc: subprocess.Popen[bytes],
             *, timeout: float) -> tuple[float, dict[str, int]]:
    """Poll until every type reaches its target count; return (the time it was
    first seen, the counts). Raises when ``timeout`` passes.

    Each poll is an audited, authorised search on the exchange under measurement, so
    only the most numerous type is counted until it is complete (then all of them):
    polling every type ten times a second took CPU from the exchange that direct
    ingest does not pay."""
    deadline = time.perf_counter() + timeout
    types = sorted(target)
    sentinel = max(types, key=lambda t: target[t])
    while True:
        now = counts(server, [sentinel])
        if now[sentinel] >= target[sentinel]:
            now = counts(server, types)
        seen = time.perf_counter()
        if all(now.get(t, -1) >= target[t] for t in types):
            return seen, now
        if seen > deadline:
            raise RuntimeError(f"not all resources arrived within {timeout:.0f}s: "
                               f"{now} of {target} (adapter exit code {proc.poll()})")
        time.sleep(POLL_SECONDS)


def adapter_env(server: Server, tmp: Path, outbox: Path) -> dict[str, str]:
    key_file = tmp / "hospital-key.pem"
    if not key_file.exists():
        key_file.write_bytes(server.hospital.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return {**os.environ, "HIE_ADAPTER_EXCHANGE": server.url,
            "HIE_ADAPTER_CLIENT_ID": server.hospital.client_id,
            "HIE_ADAPTER_KEY_FILE": str(key_file), "HIE_ADAPTER_KID": server.hospital.kid,
            "HIE_ADAPTER_OUTBOX": str(outbox)}


# -- (1) direct ingest ---------------------------------------------------------------------

def direct(server: Server, bundles: list[dict[str, Any]], warmup: int,
           concurrency: int) -> Phase:
    """Post ``bundles`` (the first ``warmup`` untimed) with ``concurrency`` in flight."""
    bodies = [orjson.dumps(b) for b in bundles]
    sizes = [len(b["entry"]) for b in bundles]

    async def run() -> Phase:
        async with http_client(server, concurrency) as client:
            warm = await post_bundles(client, server.base, bodies[:warmup], sizes[:warmup],
                                      concurrency=concurrency)
            if warm.failures:
                raise RuntimeError("warm-up Bundles were refused:\n"
                                   + "\n".join(warm.failures[:5]))
            cpu0 = server.cpu_seconds()
            with polled(server, "Observation"):
                timed = await post_bundles(client, server.base, bodies[warmup:],
                                           sizes[warmup:], concurrency=concurrency)
            cpu = server.cpu_seconds() - cpu0
        for f in timed.failures[:5]:
            print("  failure:", f, file=sys.stderr)
        return Phase("direct ingest", timed.resources, timed.seconds, timed.rate,
                     messages=timed.bundles, messages_per_s=timed.bundles / timed.seconds,
                     failures=len(timed.failures), server_cpu=cpu)

    return asyncio.run(run())


def combined(halves: list[Phase]) -> Phase:
    """The direct ingest reference from its halves (before and after the backfill)."""
    resources = sum(h.resources for h in halves)
    seconds = sum(h.seconds for h in halves)
    bundles = sum(h.messages for h in halves)
    return Phase("direct ingest", resources, seconds, resources / seconds, messages=bundles,
                 messages_per_s=bundles / seconds, failures=sum(h.failures for h in halves),
                 server_cpu=sum(h.server_cpu for h in halves))


# -- (2) FHIR NDJSON backfill --------------------------------------------------------------

def write_ndjson(bundles: list[dict[str, Any]], folder: Path, files: int) -> Counter[str]:
    """Each generated Bundle's resources as NDJSON lines with ids and literal
    references (``Type/id``), whole patients per file; returns counts per type."""
    folder.mkdir(parents=True, exist_ok=True)
    per_type: Counter[str] = Counter()
    lines: list[list[bytes]] = [[] for _ in range(files)]
    for i, bundle in enumerate(bundles):
        literal = {}
        for e in bundle["entry"]:
            rid = e["fullUrl"].removeprefix("urn:uuid:")
            literal[e["fullUrl"]] = f"{e['resource']['resourceType']}/{rid}"
        for e in bundle["entry"]:
            text = orjson.dumps(e["resource"]).decode()
            for urn, ref in literal.items():
                text = text.replace(f'"{urn}"', f'"{ref}"')
            resource = orjson.loads(text)
            resource["id"] = literal[e["fullUrl"]].split("/", 1)[1]
            per_type[resource["resourceType"]] += 1
            lines[i % files].append(orjson.dumps(resource))
    for n, chunk in enumerate(lines):
        (folder / f"export-{n:03d}.ndjson").write_bytes(b"\n".join(chunk) + b"\n")
    return per_type


def backfill(server: Server, bundles: list[dict[str, Any]], tmp: Path, files: int,
             timeout: float, profile: bool = False) -> Phase:
    folder = tmp / "ndjson"
    per_type = write_ndjson(bundles, folder, files)
    types = sorted(per_type)
    before = counts(server, types)
    target = {t: before[t] + per_type[t] for t in types}
    env = adapter_env(server, tmp, tmp / "outbox-fhir.db")
    log = OUT / "adapter-fhir.log"
    spied = OUT / "adapters-fhir-adapter.collapsed" if profile else None
    with log.open("wb") as out, profiled(server, OUT / "adapters-fhir-server.collapsed"
                                         if profile else None):
        cpu0 = server.cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen([*adapter_command(spied), "fhir", str(folder)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        watch = CpuWatch(proc.pid)
        try:
            seen, now = wait_for(server, target, proc, timeout=timeout)
            server_cpu = server.cpu_seconds() - cpu0
            proc.wait(timeout)
            command_s = time.perf_counter() - start
        finally:
            adapter_cpu = watch.stop()
            stop_group(proc)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
    print(f"  hie-adapter fhir: exit {proc.returncode}; {tail[0] if tail else ''}")
    extra = sum(now[t] - target[t] for t in types)
    n = sum(per_type.values())
    return Phase("FHIR NDJSON backfill", n, seen - start, n / (seen - start),
                 messages=files, command_seconds=command_s,
                 failures=(proc.returncode != 0) + extra, server_cpu=server_cpu,
                 adapter_cpu=adapter_cpu)


# -- (3) HL7 v2 ORU^R01 over MLLP ----------------------------------------------------------

LABS = [("GLU", "葡萄糖", "mmol/L", "3.9-6.1", 3.5, 9.0),
        ("K", "钾", "mmol/L", "3.5-5.5", 3.2, 5.8),
        ("NA", "钠", "mmol/L", "137-147", 132.0, 150.0),
        ("CREA", "肌酐", "umol/L", "44-133", 40.0, 160.0),
        ("ALT", "丙氨酸氨基转移酶", "U/L", "9-50", 5.0, 90.0)]
SURNAMES = "王李张刘陈杨黄赵吴周"
GIVEN = ["秀英", "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军"]


def oru(i: int, patients: int) -> bytes:
    """ORU^R01 number ``i``: a metabolic panel of five numeric OBX for one of
    ``patients`` patients, as a LIS sends it (UTF-8, PID-3 MRN, OBR filler number)."""
    p = i % patients
    mrn = f"BM{p:07d}"
    name = f"{SURNAMES[p % 10]}^{GIVEN[(p // 10) % 10]}"
    filler = f"F{i:08d}"
    day = 1 + i % 28
    ts = f"202405{day:02d}08{i % 60:02d}00"
    msh = "|".join(["MSH", "^~\\&", "LIS", "H001", "HIE", "REGION", ts, "",
                    "ORU^R01^ORU_R01", f"LAB{i:08d}", "P", "2.5", "", "", "", "", "",
                    "UNICODE UTF-8"])
    segs = [msh, f"PID|1||{mrn}^^^H001^MR||{name}||19{50 + p % 50:02d}0101|{'MF'[p % 2]}",
            "PV1|1|O", f"ORC|RE|P{i:08d}|{filler}",
            f"OBR|1|P{i:08d}|{filler}|BMP^基础代谢^LOCAL|||{ts}|||||||||||||||{ts}|||F"]
    for n, (code, text, unit, rng, lo, hi) in enumerate(LABS, 1):
        value = lo + (hi - lo) * ((i * 7 + n * 13) % 100) / 100
        low, _, high = rng.partition("-")
        flag = "H" if value > float(high) else "L" if value < float(low) else "N"
        segs.append(f"OBX|{n}|NM|{code}^{text}^LOCAL||{value:.1f}|{unit}|{rng}|{flag}|||F|||{ts}")
    return SB + ("\r".join(segs) + "\r").encode() + EB + CR


async def send_all(port: int, messages: list[bytes], connections: int) -> list[str]:
    """Send ``messages`` over ``connections`` MLLP connections, one at a time on
    each (waiting for its ACK); return the problems (non-AA ACKs)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    problems: list[str] = []

    async def sender() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                msg = queue.get_nowait()
                writer.write(msg)
                await writer.drain()
                ack = await asyncio.wait_for(reader.readuntil(EB + CR), 60)
                if b"MSA|AA|" not in ack:
                    problems.append(ack.decode(errors="replace").replace("\r", " / ")[:300])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(sender() for _ in range(connections)))
    return problems


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hie-adapter hl7v2 exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError("hie-adapter hl7v2 did not listen in time")


def hl7v2(server: Server, tmp: Path, count: int, patients: int, connections: int,
          timeout: float) -> Phase:
    types = ["Observation", "DiagnosticReport", "Patient"]
    before = counts(server, types)
    target = {"Observation": before["Observation"] + count * OBX_PER_ORU,
              "DiagnosticReport": before["DiagnosticReport"] + count,
              "Patient": before["Patient"] + min(patients, count)}
    messages = [oru(i, patients) for i in range(count)]
    port = free_port()
    env = adapter_env(server, tmp, tmp / "outbox-hl7.db")
    log = OUT / "adapter-hl7v2.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*adapter_command(), "hl7v2", "--listen", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_port(port, proc, log)
            cpu0, acpu0 = server.cpu_seconds(), process_cpu(proc.pid)
            start = time.perf_counter()
            problems = asyncio.run(send_all(port, messages, connections))
            acked = time.perf_counter() - start
            for p in problems[:5]:
                print("  not AA:", p, file=sys.stderr)
            seen, now = wait_for(server, target, proc, timeout=timeout)
            server_cpu = server.cpu_seconds() - cpu0
            adapter_cpu = process_cpu(proc.pid) - acpu0
        finally:
            stop_group(proc)
    seconds = seen - start
    extra = sum(now[t] - target[t] for t in types)
    resources = count * (OBX_PER_ORU + 1) + min(patients, count)
    print(f"  all {count} ACKed in {acked:.2f}s ({count / acked:,.0f} ACKs/s); "
          f"{len(problems)} not AA")
    return Phase("HL7 v2 ORU^R01 over MLLP", resources, seconds, resources / seconds,
                 messages=count, messages_per_s=count / seconds, command_seconds=acked,
                 failures=len(problems) + extra, server_cpu=server_cpu,
                 adapter_cpu=adapter_cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=150,
                        help="Bundles of generated resources per path (about 50 resources "
                             "each), direct and NDJSON alike")
    parser.add_argument("--oru", type=int, default=1000,
                        help="ORU^R01 messages to send (0: skip the HL7 v2 phase)")
    parser.add_argument("--patients", type=int, default=200,
                        help="distinct patients of the ORU messages")
    parser.add_argument("--connections", type=int, default=4,
                        help="MLLP connections sending at once")
    parser.add_argument("--files", type=int, default=10, help="NDJSON files to backfill")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--concurrency", type=int, default=8,
                        help="requests in flight for direct ingest")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for an adapter's resources to arrive")
    parser.add_argument("--quick", action="store_true",
                        help="a small smoke run (20 Bundles, 100 ORU)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the exchange and hie-adapter fhir with py-spy during the "
                             "backfill (benchmarks/out/adapters-fhir-*.collapsed)")
    parser.add_argument("--json", type=Path, default=OUT / "adapters.json",
                        help="where to write the figures")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    n = 20 if args.quick else args.bundles
    oru_n = 100 if args.quick else args.oru
    files = min(args.files, n)
    warmup = 4 if args.quick else 10

    print(f"machine: {machine()}")
    direct_bundles = list(generate_bundles(args.seed, n + warmup))
    ndjson_bundles = list(generate_bundles(args.seed + 1, n))
    dn = sum(len(b["entry"]) for b in direct_bundles[warmup:])
    nn = sum(1 for b in ndjson_bundles for _ in iter_resources(b))
    print(f"data: direct {n} Bundles (+{warmup} warm-up), {dn} resources, seed {args.seed}; "
          f"NDJSON {nn} resources of {n} Bundles in {files} files, seed {args.seed + 1}; "
          f"{oru_n} ORU^R01 ({OBX_PER_ORU} OBX each) for {args.patients} patients over "
          f"{args.connections} MLLP connections")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hie-bench-adapters-") as name:
        tmp = Path(name)
        with run_server(f"sqlite:///{tmp}/hie.db", workers=1,
                        log=args.json.parent / "serve-adapters.log",
                        var_dir=tmp / "var") as server:
            # Ingest slows down as the store grows, so direct ingest runs half before and
            # half after the backfill: both paths write into stores of the same sizes.
            half = warmup + n // 2
            before = direct(server, direct_bundles[:half], warmup, args.concurrency)
            print(f"(1a) direct ingest, first half: {before.rate:,.0f} resources/s "
                  f"({before.resources} in {before.seconds:.2f}s, {before.failures} failed)")
            fill = backfill(server, ndjson_bundles, tmp, files, args.timeout,
                            profile=args.profile)
            after = direct(server, direct_bundles[half:], 0, args.concurrency)
            print(f"(1b) direct ingest, second half: {after.rate:,.0f} resources/s "
                  f"({after.resources} in {after.seconds:.2f}s, {after.failures} failed)")
            ref = combined([before, after])
            print(f"(1) direct ingest: {ref.rate:,.0f} resources/s ({ref.resources} in "
                  f"{ref.seconds:.2f}s, {ref.failures} failed Bundles)")
            print(f"(2) FHIR NDJSON backfill: {fill.rate:,.0f} resources/s ({fill.resources} in "
                  f"{fill.seconds:.2f}s until all in the exchange; command ran "
                  f"{fill.command_seconds:.2f}s) = {fill.rate / ref.rate:.2f} of direct "
                  "(goal >= 0.8)")
            print(f"    CPU: exchange {fill.server_cpu:.2f} s (direct: {ref.server_cpu:.2f} s "
                  f"for {ref.resources}), adapter {fill.adapter_cpu:.2f} s")
            if args.profile:
                for who in ("server", "adapter"):
                    print(f"    profile of the {who} (own time, share of samples):")
                    path = OUT / f"adapters-fhir-{who}.collapsed"
                    for frame, share in top_frames(path, own=True, limit=12):
                        print(f"      {share:6.1%}  {frame}")
            lab = None
            if oru_n:
                lab = hl7v2(server, tmp, oru_n, args.patients, args.connections, args.timeout)
                print(f"(3) HL7 v2 ORU^R01: {lab.messages_per_s:,.1f} messages/s = "
                      f"{lab.rate:,.0f} resources/s ({lab.resources} resources in "
                      f"{lab.seconds:.2f}s until all in the exchange) = "
                      f"{lab.rate / ref.rate:.2f} of direct")
                print(f"    CPU: exchange {lab.server_cpu:.2f} s, adapter {lab.adapter_cpu:.2f} s")
    phases = [ref, fill, *([lab] if lab else [])]
    halves = {"direct_first_half": asdict(before), "direct_second_half": asdict(after)}
    ratios = {"backfill_over_direct": fill.rate / ref.rate}
    if lab:
        ratios["hl7v2_over_direct"] = lab.rate / ref.rate
    args.json.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "command": " ".join(["python -m benchmarks.bench_adapters",
                                                   *(argv or sys.argv[1:])]),
        "phases": [asdict(p) for p in phases], "ratios": ratios, **halves,
    }, indent=2, ensure_ascii=False))
    return 1 if any(p.failures for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
