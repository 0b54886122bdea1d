"""Ingest benchmark: transaction Bundles posted over HTTP, against the
validation floor.

The exchange has to validate every resource with ``fhir.resources`` anyway, so
the fastest it could ever ingest on one core is the rate at which
``fhir.resources`` alone validates the same resources in one process: the
*validation floor*, measured here in the same run on the same machine. The
goals (issue 2): one worker reaches at least 0.6 of the floor, and two workers
more than 1.6 times one worker.

Each worker count gets a fresh SQLite store in a temporary directory and a
fresh ``hie serve``. The first few Bundles warm the workers up (imports,
caches, connection set-up) and are not timed.

Run: ``.venv/bin/python -m benchmarks.bench_ingest`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from fhir.resources.R4B import get_fhir_model_class

from benchmarks.common import (
    OUT,
    RssSampler,
    http_client,
    machine,
    post_bundles,
    profiled,
    run_server,
    stop_on_sigterm,
    top_frames,
)
from benchmarks.datagen import generate_bundles, iter_resources


@dataclass
class WorkerRun:
    workers: int
    bundles: int
    resources: int
    seconds: float
    rate: float
    server_cpu_s: float
    client_cpu_s: float
    peak_rss_mb: float
    failures: int


def validation_floor(bundles: list[dict]) -> tuple[int, float]:
    """Validate every resource of ``bundles`` with the R4B models in this
    process; return (resources, seconds). JSON parsing is not included: the
    floor is validation alone, what no server can avoid."""
    resources = [r for b in bundles for r in iter_resources(b)]
    for r in resources[:100]:  # warm the model classes up
        get_fhir_model_class(r["resourceType"]).model_validate(r)
    start = time.perf_counter()
    for r in resources:
        get_fhir_model_class(r["resourceType"]).model_validate(r)
    return len(resources), time.perf_counter() - start


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ingest(workers: int, bodies: list[bytes], counts: list[int], *, concurrency: int,
                 warmup: int, keep: Path | None, profile: Path | None = None) -> WorkerRun:
    """Post ``bodies`` to a fresh server with ``workers`` workers; time all but
    the first ``warmup`` Bundles."""
    with tempfile.TemporaryDirectory(prefix="hie-bench-ingest-") as tmp:
        store_url = f"sqlite:///{tmp}/hie.db"
        log = (keep or Path(tmp)) / f"serve-{workers}w.log"
        with run_server(store_url, workers=workers, log=log,
                        var_dir=Path(tmp) / "var") as server:
            async with http_client(server, concurrency) as client:
                warm = await post_bundles(client, server.base, bodies[:warmup], counts[:warmup],
                                          concurrency=concurrency)
                if warm.failures:
                    raise RuntimeError("warm-up Bundles were refused:\n"
                                       + "\n".join(warm.failures[:5]))
                cpu0, ccpu0 = server.cpu_seconds(), _client_cpu()
                with profiled(server, profile), RssSampler(server) as rss:
                    timed = await post_bundles(client, server.base, bodies[warmup:],
                                               counts[warmup:], concurrency=concurrency)
                cpu1, ccpu1 = server.cpu_seconds(), _client_cpu()
    for f in timed.failures[:5]:
        print("  failure:", f, file=sys.stderr)
    return WorkerRun(workers, timed.bundles, timed.resources, timed.seconds, timed.rate,
                     cpu1 - cpu0, ccpu1 - ccpu0, rss.peak_mb, len(timed.failures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=400,
                        help="Bundles posted per worker count (about 50 resources each)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--concurrency", type=int, default=8,
                        help="requests in flight (enough to keep every worker busy)")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (40 Bundles)")
    parser.add_argument("--json", type=Path, default=OUT / "ingest.json",
                        help="where to write the figures")
    parser.add_argument("--profile", action="store_true",
                        help="sample the one-worker server with py-spy (benchmarks/out/"
                             "ingest-1w.collapsed); slows it down a little")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    n = 40 if args.quick else args.bundles
    warmup = 8 if args.quick else 16

    print(f"machine: {machine()}")
    bundles = list(generate_bundles(args.seed, n + warmup))
    bodies = [orjson.dumps(b) for b in bundles]
    counts = [len(b["entry"]) for b in bundles]
    print(f"data: {n} timed Bundles (+{warmup} warm-up), {sum(counts[warmup:])} resources, "
          f"seed {args.seed}, concurrency {args.concurrency}")

    floor_n, floor_s = validation_floor(bundles[warmup:])
    floor = floor_n / floor_s
    print(f"validation floor (fhir.resources R4B, one process): {floor:,.0f} resources/s "
          f"({floor_n} resources in {floor_s:.2f}s)")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    runs: list[WorkerRun] = []
    for w in (int(x) for x in args.workers.split(",")):
        profile = args.json.parent / f"ingest-{w}w.collapsed" if args.profile and w == 1 \
            else None
        run = asyncio.run(ingest(w, bodies, counts, concurrency=args.concurrency,
                                 warmup=warmup, keep=args.json.parent, profile=profile))
        runs.append(run)
        print(f"{w} worker(s): {run.rate:,.0f} resources/s ({run.resources} in "
              f"{run.seconds:.2f}s; server CPU {run.server_cpu_s:.1f}s, client CPU "
              f"{run.client_cpu_s:.1f}s, peak RSS {run.peak_rss_mb:.0f} MB, "
              f"{run.failures} failed Bundles)")
        if profile is not None and profile.exists():
            print(f"  profile ({profile}): own time")
            for frame, share in top_frames(profile, own=True, limit=15):
                print(f"    {share:6.1%}  {frame}")

    by_w = {r.workers: r for r in runs}
    ratios: dict[str, float] = {}
    if 1 in by_w:
        ratios["one_worker_over_floor"] = by_w[1].rate / floor
        print(f"one worker / floor: {ratios['one_worker_over_floor']:.2f} (goal >= 0.6)")
        if 2 in by_w:
            ratios["two_over_one_worker"] = by_w[2].rate / by_w[1].rate
            print(f"two workers / one worker: {ratios['two_over_one_worker']:.2f} (goal > 1.6)")
    args.json.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "command": " ".join(["python -m benchmarks.bench_ingest",
                                                   *(argv or sys.argv[1:])]),
        "floor_rate": floor, "runs": [asdict(r) for r in runs], "ratios": ratios,
    }, indent=2))
    return 1 if any(r.failures for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
