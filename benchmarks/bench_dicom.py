"""Imaging ingest against Orthanc: the same DICOM files, the same machine, the same run.

Three races, each on fresh stores (a new Orthanc and a new ``hie serve`` with a
registered hospital, in folders under ``benchmarks/out/dicom/run/``):

1. **DIMSE.** DCMTK's ``storescu`` sends every file in one association into our
   adapter (``hie-adapter dicom --listen 127.0.0.1:PORT --ae-title HIE`` pushing to
   the exchange), timed until the exchange's QIDO-RS counts every instance; and
   into Orthanc, timed until Orthanc holds them all. Goal: ≥ 1.5× Orthanc.
2. **STOW-RS / REST, 1 client.** Ours: ``POST /dicomweb/studies``
   (``multipart/related; type="application/dicom"``, one request per study, at
   most ``--batch`` instances each). Orthanc: ``POST /instances``, one instance
   per request, its native REST upload. Goal: ≥ 1.0× Orthanc.
3. The same with **4 clients** (threads, each with its own keep-alive connection).
   Goal: ≥ 1.0× Orthanc.

Beside the DIMSE race, the same ``storescu`` into do-nothing SCPs that answer
success and do no work: pynetdicom's server with its defaults (``pynetdicom-floor``,
what the adapter was built on first) and the adapter's own association acceptor
(``acceptor-floor``, ``adapters.sources.dicom_acceptor``): what an SCP of each kind
can take before it does anything with an instance.

Orthanc runs at its best: no storage compression, no saved jobs, HTTP keep-alive
and ``TcpNoDelay``, ``TCP_NODELAY=1`` in its environment and in ``storescu``'s
(DCMTK disables Nagle's algorithm then), and ``storescu`` proposes exactly the
(SOP class, transfer syntax) pairs of the files (an association profile), so no
file is converted. Request bodies are built before the clock starts, for both.
Each race first sends a few warm-up instances (another seed) to both sides.

The files: ``--instances`` synthetic instances (``benchmarks.datagen.dicom``,
kept in ``benchmarks/out/dicom/data-*``) plus pydicom's readable test files.

    .venv/bin/python -m benchmarks.bench_dicom                # ~2,000 instances
    .venv/bin/python -m benchmarks.bench_dicom --quick        # 300, a smoke run

It prints each figure and the ratios and writes ``benchmarks/out/dicom.json``. A
missed goal is reported, not an error; the exit status is non-zero only when a
side did not store every instance (the figures would mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import httpx
import pydicom

from benchmarks.common import (
    OUT,
    ROOT,
    Server,
    free_port,
    machine,
    process_cpu,
    py_spy,
    run_server,
    stop_on_sigterm,
    top_frames,
)
from benchmarks.datagen.dicom import VERSION, generate_instances, readable_test_files
from benchmarks.dicom_sides import (
    Failed,
    Figure,
    Files,
    listening,
    orthanc_dimse,
    orthanc_rest,
    post_all,
    scp_floor,
    wait_until,
)

# The Orthanc peer and storescu live with the tests that use them too.
sys.path.insert(0, str(ROOT / "tests"))
from peers.orthanc import (  # noqa: E402
    available,
    run_storescu,
    storescu,
    storescu_command,
)

DATA = OUT / "dicom"
ADAPTER = str(Path(sys.executable).parent / "hie-adapter")
DICOM_JSON = "application/dicom+json"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
FAILED_SOP_SEQUENCE = "00081198"
GOALS = {"dimse": 1.5, "rest-1": 1.0, "rest-4": 1.0}
#: --profile: where py-spy's collapsed stacks go (None: no profiling)
PROFILE: dict[str, Path | None] = {"dir": None}


def profile_out(name: str) -> Path | None:
    folder = PROFILE["dir"]
    return folder / f"dicom-{name}.collapsed" if folder else None


# -- data -----------------------------------------------------------------------------


def load_files(instances: int, seed: int) -> tuple[Files, list[Path]]:
    """The benchmark files (generated once into ``benchmarks/out/dicom/``) and
    the warm-up files (another seed)."""
    folder = DATA / f"data-v{VERSION}-s{seed}-n{instances}"
    manifest = folder / "manifest.json"
    if not manifest.exists():
        if folder.exists():
            shutil.rmtree(folder)
        made = generate_instances(folder / "synthetic", seed=seed, instances=instances)
        warm = generate_instances(folder / "warmup", seed=seed + 1, instances=24)
        manifest.write_text(json.dumps({
            "seed": seed, "instances": instances,
            "synthetic": [[str(m.path), m.study_uid] for m in made],
            "warmup": [str(w.path) for w in warm]}))
    data = json.loads(manifest.read_text())
    study_of = {Path(p): s for p, s in data["synthetic"]}
    # the exchange files every study under a patient: test files without a
    # PatientID are refused (409), so neither side gets them
    tests = readable_test_files(with_patient_id=True)
    for f in tests:
        study_of[f] = str(pydicom.dcmread(f, stop_before_pixels=True,
                                          specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
    paths = [*tests, *(Path(p) for p, _ in data["synthetic"])]
    return (Files(paths, study_of, len(data["synthetic"]), len(tests)),
            [Path(p) for p in data["warmup"]])


# -- our side -----------------------------------------------------------------------------


@contextlib.contextmanager
def exchange(work: Path, workers: int) -> Iterator[Server]:
    """A fresh ``hie serve`` with the benchmark hospital registered."""
    var = work / "var"
    with run_server(f"sqlite:///{var}/hie.db", workers=workers, log=work / "exchange.log",
                    var_dir=var) as server:
        yield server


def token(server: Server) -> str:
    return asyncio.run(server.auth.token())


def qido_count(server: Server, bearer: str) -> int:
    """Instances the exchange's QIDO-RS knows: the sum of the studies'
    Number of Study Related Instances."""
    total, offset, limit = 0, 0, 500
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {bearer}",
                                           "Accept": DICOM_JSON}) as client:
        while True:
            r = client.get(f"{server.url}/dicomweb/studies",
                           params={"includefield": NUMBER_OF_STUDY_RELATED_INSTANCES,
                                   "limit": limit, "offset": offset})
            if r.status_code == 204:
                return total
            r.raise_for_status()
            page = r.json()
            for study in page:
                values = study.get(NUMBER_OF_STUDY_RELATED_INSTANCES, {}).get("Value") or [0]
                total += int(values[0])
            if len(page) < limit:
                return total
            offset += limit


def multipart(files: Sequence[bytes], boundary: str) -> bytes:
    out = bytearray()
    for data in files:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += data
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def stow_bodies(paths: Sequence[Path], study_of: dict[Path, str], batch: int
                ) -> tuple[list[bytes], str]:
    """One multipart body per study (split at ``batch`` instances), and the boundary."""
    boundary = f"hie-bench-{uuid.uuid4().hex}"
    studies: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        studies[study_of.get(p, "")].append(p)
    bodies = []
    for members in studies.values():
        for i in range(0, len(members), batch):
            bodies.append(multipart([p.read_bytes() for p in members[i:i + batch]], boundary))
    return bodies, boundary


def related(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow_send(server: Server) -> Callable[[httpx.Client, bytes], None]:
    def send(client: httpx.Client, body: bytes) -> None:
        r = client.post(f"{server.url}/dicomweb/studies", content=body)
        if r.status_code != 200:
            raise Failed(f"STOW-RS: HTTP {r.status_code} {r.text[:800]}")
        failed = r.json().get(FAILED_SOP_SEQUENCE)
        if failed:
            raise Failed(f"STOW-RS: failed instances {json.dumps(failed)[:800]}")
    return send


def hie_stow(files: Files, warm: list[Path], work: Path, *, clients: int, workers: int,
             batch: int) -> Figure:
    with exchange(work, workers) as server:
        headers = {"Authorization": f"Bearer {token(server)}", "Accept": DICOM_JSON}
        warm_bodies, boundary = stow_bodies(warm, {}, batch)  # mixed studies, one request
        post_all(warm_bodies, stow_send(server), clients=1,
                 headers=headers | {"Content-Type": related(boundary)})
        bodies, boundary = stow_bodies(files.paths, files.study_of, batch)
        headers["Content-Type"] = related(boundary)
        cpu0 = server.cpu_seconds()
        with py_spy(server.proc.pid, profile_out(f"rest-{clients}-exchange")):
            seconds = post_all(bodies, stow_send(server), clients=clients, headers=headers)
        cpu = server.cpu_seconds() - cpu0
        stored = qido_count(server, token(server)) - len(warm)
        if stored != len(files.paths):
            raise Failed(f"hie STOW-RS: QIDO-RS counts {stored} of {len(files.paths)}")
        return Figure(f"rest-{clients}", "hie", len(files.paths), seconds, cpu,
                      {"requests": len(bodies), "workers": workers, "batch": batch})


def hie_dimse(files: Files, warm: list[Path], work: Path, *, workers: int) -> Figure:
    with exchange(work, workers) as server:
        port = free_port()
        hospital = server.hospital
        cmd = [ADAPTER, "dicom", "--listen", f"127.0.0.1:{port}", "--ae-title", "HIE",
               "--exchange", server.url, "--client-id", hospital.client_id,
               "--key", str(work / "var" / "bench-hospital.pem"), "--kid", hospital.kid,
               "--outbox", str(work / "outbox.db")]
        log = (work / "adapter.log").open("ab")
        adapter = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
        log.close()
        try:
            deadline = time.monotonic() + 30
            while not listening(port):
                if adapter.poll() is not None or time.monotonic() > deadline:
                    raise Failed("hie-adapter dicom did not listen:\n"
                                 + (work / "adapter.log").read_text(errors="replace")[-3000:])
                time.sleep(0.1)
            bearer = token(server)
            storescu(warm, port=port, called_aet="HIE", workdir=work / "scu-warm")
            wait_until(lambda: qido_count(server, bearer), len(warm), 60)
            scu = storescu_command(files.paths, port=port, called_aet="HIE",
                                   workdir=work / "scu")
            exchange0, adapter0 = server.cpu_seconds(), process_cpu(adapter.pid)
            with py_spy(server.proc.pid, profile_out("dimse-exchange")), \
                    py_spy(adapter.pid, profile_out("dimse-adapter")):
                start = time.perf_counter()
                run_storescu(scu)
                acked = time.perf_counter() - start
                total = len(warm) + len(files.paths)
                # polled every 20 ms: the time the last instance became queryable,
                # to that resolution (Orthanc's side holds everything once storescu
                # is done; its first count answers at once)
                wait_until(lambda: qido_count(server, bearer), total,
                           max(120.0, 20 * acked), interval=0.02)
                seconds = time.perf_counter() - start
            exchange_cpu = server.cpu_seconds() - exchange0
            adapter_cpu = process_cpu(adapter.pid) - adapter0
            return Figure("dimse", "hie", len(files.paths), seconds, exchange_cpu + adapter_cpu,
                          {"storescu_done_s": round(acked, 3), "workers": workers,
                           "cpu": "exchange + adapter",
                           "exchange_cpu_s": round(exchange_cpu, 1),
                           "adapter_cpu_s": round(adapter_cpu, 1)})
        finally:
            if adapter.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(adapter.pid, 15)
                try:
                    adapter.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(adapter.pid, 9)
                    adapter.wait(5)


# -- the run -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    files, warm = load_files(args.instances, args.seed)
    print(f"{len(files.paths)} instances ({files.synthetic} synthetic, {files.test_files} "
          f"pydicom test files), {files.bytes / 2**20:.1f} MiB, {len(files.by_study())} "
          f"studies; {len(warm)} warm-up instances; hie serve --workers {args.workers}",
          flush=True)
    # one folder per run: engineers share this machine, and one run must not delete
    # the stores of another that is still racing
    root = DATA / "run" / str(os.getpid())
    shutil.rmtree(root, ignore_errors=True)
    races: list[tuple[str, str, Callable[[Path], Figure]]] = []
    if "dimse" in args.races:
        races += [("dimse", "orthanc", lambda w: orthanc_dimse(files, warm, w)),
                  ("dimse", "hie", lambda w: hie_dimse(files, warm, w, workers=args.workers)),
                  ("dimse", "pynetdicom-floor",
                   lambda w: scp_floor(files, w, kind="pynetdicom")),
                  ("dimse", "acceptor-floor", lambda w: scp_floor(files, w, kind="acceptor"))]
    for c in args.clients:
        if "rest" in args.races:
            races += [(f"rest-{c}", "orthanc",
                       lambda w, c=c: orthanc_rest(files, warm, w, clients=c)),
                      (f"rest-{c}", "hie",
                       lambda w, c=c: hie_stow(files, warm, w, clients=c, workers=args.workers,
                                               batch=args.batch))]
    figures: list[Figure] = []
    errors: list[str] = []
    for race, side, fn in races:
        work = root / f"{race}-{side}"
        work.mkdir(parents=True)
        try:
            fig = fn(work)
        except (Failed, RuntimeError, httpx.HTTPError, subprocess.SubprocessError) as exc:
            errors.append(f"{race} {side}: {exc}")
            print(f"  {race:7s} {side:8s} FAILED: {exc}", flush=True)
            continue
        figures.append(fig)
        print(f"  {race:7s} {side:8s} {fig.rate:8.1f} instances/s  ({fig.instances} in "
              f"{fig.seconds:.2f} s, server CPU {fig.server_cpu:.1f} s) {fig.notes}",
              flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    summary = report(figures)
    if PROFILE["dir"]:
        for collapsed in sorted(PROFILE["dir"].glob("dicom-*.collapsed")):
            print(f"\nhottest frames (own time) of {collapsed.name}:")
            for frame, share in top_frames(collapsed, own=True, limit=12):
                print(f"  {share:6.1%}  {frame}")
    out = OUT / "dicom.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(), "args": {k: v for k, v in vars(args).items()},
        "files": {"instances": len(files.paths), "synthetic": files.synthetic,
                  "test_files": files.test_files, "bytes": files.bytes,
                  "studies": len(files.by_study())},
        "figures": [asdict(f) | {"rate": f.rate} for f in figures],
        "ratios": summary, "errors": errors}, indent=2, default=str))
    print(f"raw output: {out}")
    return 1 if errors else 0


def report(figures: list[Figure]) -> dict[str, dict]:
    by = {(f.race, f.side): f for f in figures}
    summary: dict[str, dict] = {}
    print("\n| race | hie instances/s | Orthanc instances/s | ratio | goal |")
    print("|---|---|---|---|---|")
    for race, goal in GOALS.items():
        ours, theirs = by.get((race, "hie")), by.get((race, "orthanc"))
        if not ours or not theirs:
            continue
        ratio = ours.rate / theirs.rate if theirs.rate else float("nan")
        met = ratio >= goal
        summary[race] = {"hie": ours.rate, "orthanc": theirs.rate, "ratio": ratio,
                         "goal": goal, "met": met}
        print(f"| {race} | {ours.rate:,.0f} | {theirs.rate:,.0f} | {ratio:.2f}x | "
              f"≥ {goal}x {'met' if met else 'MISSED'} |")
    theirs = by.get(("dimse", "orthanc"))
    for side, what in (("pynetdicom-floor", "pynetdicom's server, its defaults"),
                       ("acceptor-floor", "the adapter's acceptor")):
        floor = by.get(("dimse", side))
        if floor and theirs and theirs.rate:
            ratio = floor.rate / theirs.rate
            summary[f"dimse-{side}"] = {"rate": floor.rate, "orthanc": theirs.rate,
                                        "ratio": ratio}
            print(f"floor: storescu into a do-nothing SCP ({what}): "
                  f"{floor.rate:,.0f} instances/s = {ratio:.2f}x Orthanc")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dicom",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000,
                        help="synthetic instances (pydicom's test files come on top)")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--quick", action="store_true", help="300 instances, a smoke run")
    parser.add_argument("--workers", type=int, default=1, help="hie serve --workers")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4], help="REST clients, e.g. 1,4")
    parser.add_argument("--batch", type=int, default=100,
                        help="most instances in one STOW-RS request")
    parser.add_argument("--races", type=lambda s: s.split(","), default=["dimse", "rest"],
                        help="dimse,rest")
    parser.add_argument("--profile", action="store_true",
                        help="sample the exchange (and the adapter) with py-spy while timed; "
                             "collapsed stacks in benchmarks/out/dicom-*.collapsed")
    parser.add_argument("--keep", action="store_true",
                        help="keep each race's stores and logs in benchmarks/out/dicom/run/PID/")
    args = parser.parse_args(argv)
    if args.quick:
        args.instances = 300
    if not available():
        print("Orthanc, orthanc-dicomweb or dcmtk is missing: scripts/setup test installs them")
        return 2
    stop_on_sigterm()
    if args.profile:
        PROFILE["dir"] = OUT
        for old in OUT.glob("dicom-*.collapsed"):
            old.unlink()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
