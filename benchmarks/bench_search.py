"""Search benchmark: common clinical queries over HTTP, beside the same query
run directly on the store, on a store of at least 200,000 generated resources.

The store is built by posting generated Bundles to ``hie serve`` (one patient
with about 1,000 resources for ``$everything`` first), while the server's
resident memory (the process and its workers) is sampled — goal: under 500 MB.
It is kept in ``benchmarks/out/`` and reused by later runs with the same seed
and size (``--rebuild`` forces a new one).

Each query runs many times over HTTP and, interleaved, on the store opened in
this process (``hie.store.open_store``, the query built by
``hie.fhir.search.parse.parse_search``): the difference is what the FHIR layer
and HTTP add. Goal: p50 at most 3x the store-only p50, and under 20 ms on
SQLite, for every selective query.

Run: ``.venv/bin/python -m benchmarks.bench_search`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import orjson

from benchmarks.common import (
    OUT,
    LeanClient,
    RssSampler,
    bundle_stream,
    http_client,
    machine,
    post_bundles,
    profiled,
    run_server,
    stop_on_sigterm,
)
from benchmarks.datagen import generate_big_patient
from benchmarks.search_queries import QuerySet, http_floor, pick_queries, time_queries

MEMORY_GOAL_MB = 500


async def build(store_dir: Path, *, seed: int, target: int, workers: int,
                concurrency: int) -> dict:
    """Fill the (empty) ``store_dir`` through HTTP and return the build figures."""
    big = generate_big_patient(seed)
    store_url = f"sqlite:///{store_dir}/hie.db"
    posted = bundles = 0
    failures: list[str] = []
    with run_server(store_url, workers=workers, log=store_dir / "serve-build.log",
                    var_dir=store_dir / "var") as server, \
            RssSampler(server, interval=0.5) as rss:
        start = time.perf_counter()
        async with http_client(server, concurrency) as client:
            # The big patient's Bundles share one conditional create: in order.
            res = await post_bundles(client, server.base, [orjson.dumps(b) for b in big.bundles],
                                     [len(b["entry"]) for b in big.bundles], concurrency=1)
            failures += res.failures
            posted += big.resource_count
            bundles += res.bundles
            for bodies, counts in bundle_stream(seed, target - posted, 200):
                res = await post_bundles(client, server.base, bodies, counts,
                                         concurrency=concurrency)
                failures += res.failures
                posted += res.resources
                bundles += res.bundles
                if failures:
                    break
                rate = posted / (time.perf_counter() - start)
                print(f"  {posted:,} resources posted, {rate:,.0f}/s, RSS now "
                      f"{server.rss() / 2**20:.0f} MB (peak {rss.peak_mb:.0f} MB)",
                      flush=True)
        seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError("the server refused Bundles while building the store:\n"
                           + "\n".join(failures[:5]))
    return {"seed": seed, "target": target, "resources": posted, "bundles": bundles,
            "workers": workers, "seconds": seconds, "rate": posted / seconds,
            "peak_rss_mb": rss.peak_mb, "samples": len(rss.samples),
            "big_patient": {"mrn_system": big.mrn_system, "mrn": big.mrn,
                            "resources": big.resource_count,
                            "bundles": len(big.bundles)}}


async def measure(store_dir: Path, manifest: dict, *, seed: int, runs: int,
                  everything_runs: int, workers: int, profile: Path | None,
                  client_kind: str = "lean") -> list[dict]:
    from hie.dependencies import REGISTRY_SOURCE
    from hie.store import open_store
    from hie.store.query import Restriction

    store_url = f"sqlite:///{store_dir}/hie.db"
    store = open_store(store_url)
    await store.open()
    try:
        with run_server(store_url, workers=workers, log=store_dir / "serve-search.log",
                        var_dir=store_dir / "var") as srv:
            # The store-only queries see what the server lets this hospital see.
            visible = Restriction(sources=frozenset({srv.hospital.source, REGISTRY_SOURCE}))
            queries: QuerySet = await pick_queries(store, seed=seed, manifest=manifest,
                                                   restriction=visible)
            async with (LeanClient(srv) if client_kind == "lean"
                        else http_client(srv, 4)) as client:
                with profiled(srv, profile):
                    floor = await http_floor(client, srv.url, srv.base, runs=runs)
                    timed = await time_queries(client, srv.base, store, queries, runs=runs,
                                               everything_runs=everything_runs)
                return floor + timed
    finally:
        await store.close()


def report(manifest: dict, results: list[dict]) -> str:
    """The figures as Markdown (pasted into RESULTS.md)."""
    b = manifest["build"]
    lines = [
        f"Store: {b['resources']:,} resources in {b['bundles']:,} Bundles (seed {b['seed']}), "
        f"built over HTTP by {b['workers']} worker(s) in {b['seconds']:.0f}s "
        f"({b['rate']:,.0f} resources/s).",
        f"Peak resident memory of the server while ingesting: {b['peak_rss_mb']:.0f} MB "
        f"(goal < {MEMORY_GOAL_MB} MB: {'met' if b['peak_rss_mb'] < MEMORY_GOAL_MB else 'MISSED'})",
        "",
        "| query | matches | HTTP p50 | HTTP p99 | store p50 | store p99 | p50 ratio | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["store_p50"] == 0.0:  # a floor: no store query to compare with
            lines.append(f"| {r['name']} | - | {r['http_p50']:.2f} ms | {r['http_p99']:.2f} ms "
                         f"| - | - | - | - |")
            continue
        if r["selective"]:
            ok = r["http_p50"] <= 3 * r["store_p50"] and r["http_p50"] < 20
            goal = "met" if ok else "MISSED"
        else:
            goal = "n/a (not selective)"
        lines.append(
            f"| {r['name']} | {r['matches']} | {r['http_p50']:.1f} ms | {r['http_p99']:.1f} ms "
            f"| {r['store_p50']:.1f} ms | {r['store_p99']:.1f} ms | {r['ratio']:.1f}x | {goal} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=200_000, help="store size to build")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--runs", type=int, default=300, help="timed runs per query")
    parser.add_argument("--everything-runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="server workers")
    parser.add_argument("--build-workers", type=int, default=1,
                        help="server workers while building the store")
    parser.add_argument("--concurrency", type=int, default=8, help="Bundles in flight (build)")
    parser.add_argument("--client", choices=("lean", "httpx"), default="lean",
                        help="HTTP client of the timed queries: the standard library's "
                             "http.client (default) or httpx, which costs ~0.6 ms more "
                             "per request on this kind of machine")
    parser.add_argument("--rebuild", action="store_true", help="build the store even if kept")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy while the queries run "
                             "(benchmarks/out/search.collapsed); slows it down a little")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5,000 resources, 20 runs per query")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    if args.quick:
        args.resources, args.runs, args.everything_runs = 5_000, 20, 3
    store_dir = OUT / ("search-quick" if args.quick else "search")
    manifest_path = store_dir / "manifest.json"

    print(f"machine: {machine()}")
    manifest: dict = {}
    if manifest_path.exists() and not args.rebuild:
        manifest = json.loads(manifest_path.read_text())
    wanted = {"seed": args.seed, "target": args.resources}
    if {k: manifest.get("build", {}).get(k) for k in wanted} != wanted:
        print(f"building a store of {args.resources:,} resources in {store_dir} ...")
        shutil.rmtree(store_dir, ignore_errors=True)
        store_dir.mkdir(parents=True)
        build_figures = asyncio.run(build(store_dir, seed=args.seed, target=args.resources,
                                          workers=args.build_workers,
                                          concurrency=args.concurrency))
        manifest = {"build": build_figures, "machine": machine()}
        manifest_path.write_text(json.dumps(manifest, indent=2))
    else:
        print(f"reusing the store in {store_dir} (built {manifest['build']['resources']:,} "
              f"resources; --rebuild to build anew)")

    results = asyncio.run(measure(store_dir, manifest, seed=args.seed, runs=args.runs,
                                  everything_runs=args.everything_runs, workers=args.workers,
                                  profile=OUT / "search.collapsed" if args.profile else None,
                                  client_kind=args.client))
    text = report(manifest, results)
    print(text)
    stem = "search-quick" if args.quick else "search"
    (OUT / f"{stem}.json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
        "command": " ".join(["python -m benchmarks.bench_search", *(argv or sys.argv[1:])]),
        "build": manifest["build"], "queries": results}, indent=2))
    (OUT / f"{stem}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
