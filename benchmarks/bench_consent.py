"""Consent benchmarks (issue 4): the cost of a decision, and of the consent gate
on a doctor's search.

1. **Decisions**: ``ConsentClient.decide`` for a doctor of hospital B, over a
   SQLite store holding the consents of many persons (1,000 persons with 1-3
   consents each by default: grants to a hospital or one doctor, with purposes,
   opened categories, periods and masks; refusals of a hospital or of some
   categories; withdrawn grants), in-process (``LocalConsentClient`` over
   ``StoreConsentData``) and over HTTP (``HttpConsentClient`` against a
   ``hie-consent serve`` subprocess on 127.0.0.1 sharing the store file and the
   ``HIE_VAR_DIR`` keys, authenticated with
   ``hie.gate.service_token_provider``). Sequential calls give p50/p99
   latency; a bounded concurrent run gives decisions per second.
2. **Gated vs ungated**: the same searches — a patient's Observations by code,
   ``Patient/$everything`` (every page) and a read by id — by a doctor of
   hospital B through the consent gate (B has its own registration of the
   patient; the patient consented B to see A's records) and by hospital A's
   system for its own records (no gate), alternating request by request, on a
   store of generated data (``benchmarks/datagen``, 60,000 resources by
   default, written by A). Goal: gated p50 at most 1.5x ungated. Over HTTP
   against ``hie serve`` (one worker; consent in-process, and again with the
   consent service remote, ``HIE_CONSENT_URL``), and in-process (httpx
   ``ASGITransport``).

The store is kept in ``benchmarks/out/consent/`` and reused while seed and
sizes match (``--rebuild`` builds it anew).

Run: ``.venv/bin/python -m benchmarks.bench_consent`` (``--quick`` for a
smoke run, ``--profile`` to sample the server with py-spy during the gated runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    OUT,
    ROOT,
    Hospital,
    Server,
    free_port,
    http_client,
    machine,
    stop_on_sigterm,
)
from benchmarks.consent_region import (
    DOCTOR,
    GOAL_RATIO,
    ORG_A,
    ORG_B,
    SPY_RATE,
    STORE_DIR,
    Chosen,
    DoctorAuth,
    build,
    consent_server,
    exchange_server,
    frame_ms,
    load_hospital,
    short,
    spy,
    stats,
)

# -- 1. decisions ------------------------------------------------------------------

async def _time_decisions(decide: Callable[[Any], Awaitable[Any]], requests: list[Any], *,
                          concurrency: int) -> dict[str, Any]:
    for r in requests[:50]:  # warm-up
        await decide(r)
    times: list[float] = []
    permits = 0
    for r in requests:
        t0 = time.perf_counter()
        answer = await decide(r)
        times.append(time.perf_counter() - t0)
        permits += bool(answer.permit)
    out = stats(times)
    out["permit_share"] = permits / len(requests)
    queue = list(requests)
    sem = asyncio.Semaphore(concurrency)

    async def one(r: Any) -> None:
        async with sem:
            await decide(r)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in queue))
    wall = time.perf_counter() - t0
    out["sequential_per_s"] = len(times) / sum(times)
    out["concurrent_per_s"] = len(queue) / wall
    out["concurrency"] = concurrency
    return out


def _comparable(decision: Any) -> dict[str, Any]:
    """A decision as a dict, its basis as a sorted list (the order of the basis
    entries may differ between processes)."""
    out = decision.model_dump(mode="json")
    out["basis"] = sorted(out["basis"], key=lambda b: json.dumps(b, sort_keys=True))
    return out


async def bench_decisions(store_dir: Path, manifest: dict, *, n: int, concurrency: int,
                          profile: Path | None = None) -> dict[str, Any]:
    from consent.client import HttpConsentClient, LocalConsentClient
    from hie.auth.tokens import TokenService
    from hie.config import Settings
    from hie.gate import DEFAULT_BREAK_GLASS_HOURS, cached_organizations, service_token_provider
    from hie.gate.data import StoreConsentData
    from hie.store import open_store
    from schemas.consent import DecisionRequest

    rng = random.Random(manifest["seed"] + 2)
    persons = manifest["consent_persons"]
    requests = [DecisionRequest(organization=ORG_B, practitioner=DOCTOR, purpose="TREAT",
                                person=rng.choice(persons)) for _ in range(n)]
    store_url = f"sqlite:///{store_dir}/hie.db"
    var = store_dir / "var"
    results: dict[str, Any] = {}
    store = open_store(store_url)
    await store.open()
    try:
        local = LocalConsentClient(lambda: StoreConsentData(store),
                                   break_glass_hours=DEFAULT_BREAK_GLASS_HOURS,
                                   organizations=cached_organizations(store))
        results["in-process"] = await _time_decisions(local.decide, requests,
                                                      concurrency=concurrency)
        with consent_server(store_url, var, store_dir / "consent-serve.log") as (url, pid):
            settings = Settings(store_url=store_url, base_url=url, var_dir=str(var))
            remote = HttpConsentClient(url, token_provider=service_token_provider(
                TokenService(settings)))
            try:
                for r in requests[:20]:  # the two transports answer alike
                    here, there = await local.decide(r), await remote.decide(r)
                    if _comparable(there) != _comparable(here):
                        raise RuntimeError(f"HTTP and in-process decisions differ: "
                                           f"{there} != {here}")
                results["HTTP"] = await _time_decisions(remote.decide, requests,
                                                        concurrency=concurrency)
                if profile is not None:  # where a decision's time goes in the service
                    with spy(pid, profile):
                        for r in requests:
                            await remote.decide(r)
                    results["HTTP"]["profile"] = str(profile)
            finally:
                await remote.aclose()
    finally:
        await store.close()
    return results


# -- 2. gated vs ungated ------------------------------------------------------------

QUERIES = ("Observation by code", "$everything", "read by id")


async def _fetch(client: httpx.AsyncClient, kind: str, base: str, patient: str,
                 c: Chosen) -> int:
    """One request (all pages of ``$everything``); the number of entries seen."""
    if kind == "read by id":
        resp = await client.get(f"{base}/Observation/{c.obs_id}")
        if resp.status_code != 200:
            raise RuntimeError(f"read: HTTP {resp.status_code} {resp.text[:300]}")
        return 1
    if kind == "Observation by code":
        resp = await client.get(f"{base}/Observation",
                                params={"subject": f"Patient/{patient}", "code": c.code})
        if resp.status_code != 200:
            raise RuntimeError(f"search: HTTP {resp.status_code} {resp.text[:300]}")
        return len(resp.json().get("entry", []))
    entries = 0
    url: str | None = f"{base}/Patient/{patient}/$everything"
    while url:
        resp = await client.get(url)
        if resp.status_code != 200:
            raise RuntimeError(f"$everything: HTTP {resp.status_code} {resp.text[:300]}")
        body = resp.json()
        entries += len(body.get("entry", []))
        url = next((link["url"] for link in body.get("link", [])
                    if link["relation"] == "next"), None)
    return entries


async def gated_vs_ungated(a: httpx.AsyncClient, b: httpx.AsyncClient, base: str,
                           chosen: list[Chosen], *, rounds: int) -> dict[str, Any]:
    """A's system (own records, no gate) and B's doctor (through the gate), the
    same patient's records, alternating request by request."""
    for c in chosen:  # warm-up, and both must see the same records of A
        for kind in QUERIES:
            na = await _fetch(a, kind, base, c.pa, c)
            nb = await _fetch(b, kind, base, c.pb, c)
            # B also sees its own Patient and its Provenance; not the sensitive
            # records of A the patient did not open to B
            extra = 2 if kind == "$everything" else 0
            if not 0 < nb <= na + extra:
                raise RuntimeError(f"{kind} of {c.pa}: A sees {na}, B's doctor {nb}")
    out: dict[str, Any] = {}
    for kind in QUERIES:
        times: dict[str, list[float]] = {"ungated": [], "gated": []}
        entries = {"ungated": 0, "gated": 0}
        n = rounds if kind != "$everything" else max(20, rounds // 3)
        for i in range(n):
            c = chosen[i % len(chosen)]
            order = ("ungated", "gated") if i % 2 == 0 else ("gated", "ungated")
            for who in order:
                client, patient = (a, c.pa) if who == "ungated" else (b, c.pb)
                t0 = time.perf_counter()
                entries[who] += await _fetch(client, kind, base, patient, c)
                times[who].append(time.perf_counter() - t0)
        g, u = stats(times["gated"]), stats(times["ungated"])
        out[kind] = {"gated": g, "ungated": u, "ratio_p50": g["p50_ms"] / u["p50_ms"],
                     "entries_gated": entries["gated"] / n,
                     "entries_ungated": entries["ungated"] / n}
    return out


async def _http_gate(server: Server, hospital_b: Hospital, chosen: list[Chosen],
                     rounds: int, profile: Path | None) -> dict[str, Any]:
    b_auth = DoctorAuth(hospital_b, server.url, DOCTOR)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with http_client(server, 4) as a, \
            httpx.AsyncClient(timeout=300, limits=limits, auth=b_auth) as b:
        floor: list[float] = []
        for _ in range(200):
            t0 = time.perf_counter()
            await a.get(f"{server.url}/healthz")
            floor.append(time.perf_counter() - t0)
        out = await gated_vs_ungated(a, b, server.base, chosen, rounds=rounds)
        out["healthz"] = stats(floor)
        if profile is not None:  # each side alone under py-spy, the same requests
            for who, client in (("ungated", a), ("gated", b)):
                requests = 0
                with spy(server.proc.pid, profile.with_suffix(f".{who}.collapsed")):
                    for kind in QUERIES:
                        n = rounds if kind != "$everything" else max(20, rounds // 3)
                        for i in range(n):
                            c = chosen[i % len(chosen)]
                            await _fetch(client, kind, server.base,
                                         c.pa if who == "ungated" else c.pb, c)
                            requests += 1
                out[f"profile_{who}"] = str(profile.with_suffix(f".{who}.collapsed"))
            out["profile_requests"] = requests
        return out


def bench_gate_http(store_dir: Path, manifest: dict, *, rounds: int, remote: bool,
                    profile: Path | None) -> dict[str, Any]:
    store_url = f"sqlite:///{store_dir}/hie.db"
    var = store_dir / "var"
    hospital_b = load_hospital(ORG_B, var / f"{ORG_B}.pem")
    chosen = [Chosen(**c) for c in manifest["chosen"]]
    with contextlib.ExitStack() as stack:
        port = free_port()
        consent_url = ""
        if remote:
            consent_url, _ = stack.enter_context(consent_server(
                store_url, var, store_dir / "consent-serve-gate.log",
                base_url=f"http://127.0.0.1:{port}"))
        server = stack.enter_context(exchange_server(
            store_url, var, store_dir / ("serve-gate-remote.log" if remote else "serve-gate.log"),
            port=port, consent_url=consent_url))
        return asyncio.run(_http_gate(server, hospital_b, chosen, rounds, profile))


async def bench_gate_asgi(store_dir: Path, manifest: dict, *, rounds: int) -> dict[str, Any]:
    from hie.app import create_app
    from hie.config import Settings

    base = "http://bench"
    settings = Settings(store_url=f"sqlite:///{store_dir}/hie.db", base_url=base,
                        var_dir=str(store_dir / "var"), consent_url="")
    app = create_app(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the app logs at INFO
    chosen = [Chosen(**c) for c in manifest["chosen"]]
    async with app.router.lifespan_context(app):
        tokens = app.state.tokens
        a_token, _, _ = tokens.issue(client_id=ORG_A, organization=ORG_A,
                                     scope="system/*.cruds")
        b_token, _, _ = tokens.issue(client_id=ORG_B, organization=ORG_B, scope="user/*.rs",
                                     practitioner=DOCTOR, purpose_of_use="TREAT")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base, headers={
                    "Authorization": f"Bearer {a_token}"}) as a, \
                httpx.AsyncClient(transport=transport, base_url=base, headers={
                    "Authorization": f"Bearer {b_token}"}) as b:
            return await gated_vs_ungated(a, b, f"{base}/fhir", chosen, rounds=rounds)


# -- report -------------------------------------------------------------------------

def _print_decisions(results: dict[str, Any]) -> None:
    print("\n1. Decisions (ConsentClient.decide, doctor of B, TREAT, random consented person)")
    print(f"{'mode':<12} {'n':>6} {'p50':>9} {'p99':>9} {'seq/s':>8} {'conc/s':>8} "
          f"{'permit':>7}")
    for mode, r in results.items():
        print(f"{mode:<12} {r['n']:>6} {r['p50_ms']:>7.2f}ms {r['p99_ms']:>7.2f}ms "
              f"{r['sequential_per_s']:>8.0f} {r['concurrent_per_s']:>8.0f} "
              f"{r['permit_share']:>6.0%}  (concurrent: {r['concurrency']} in flight)")


def _print_gate(title: str, results: dict[str, Any]) -> None:
    print(f"\n{title}")
    if "healthz" in results:
        h = results["healthz"]
        print(f"  GET /healthz floor: p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms")
    print(f"  {'query':<20} {'entries':>8} {'ungated p50':>12} {'p99':>8} {'gated p50':>10} "
          f"{'p99':>8} {'extra':>7} {'ratio':>6}  goal <= {GOAL_RATIO}x")
    for kind in QUERIES:
        r = results[kind]
        ok = "met" if round(r["ratio_p50"], 2) <= GOAL_RATIO else "MISSED"
        extra = r["gated"]["p50_ms"] - r["ungated"]["p50_ms"]
        print(f"  {kind:<20} {r['entries_ungated']:>4.0f}/{r['entries_gated']:<3.0f} "
              f"{r['ungated']['p50_ms']:>10.2f}ms {r['ungated']['p99_ms']:>6.1f}ms "
              f"{r['gated']['p50_ms']:>8.2f}ms {r['gated']['p99_ms']:>6.1f}ms "
              f"{extra:>5.2f}ms {r['ratio_p50']:>5.2f}x  {ok}")


def _project(frame: str) -> bool:
    return any(f"({p}" in short(frame) for p in ("hie/", "consent/", "schemas/"))


def _print_profiles(results: dict[str, Any]) -> dict[str, Any]:
    """Where the time goes: the consent service per HTTP decision, and the
    exchange per request for B's doctor (gated) against A's system (ungated).
    Busy samples only (see :data:`IDLE_LEAVES`)."""
    out: dict[str, Any] = {}
    decide = results["decisions"]["HTTP"]
    if "profile" in decide:
        path, n = Path(decide["profile"]), decide["n"]
        per, own = frame_ms(path, per=n), frame_ms(path, per=n, own=True)
        root = max(per.values(), default=0.0)
        print(f"\nprofile of hie-consent serve, {n} sequential HTTP decisions (py-spy "
              f"{SPY_RATE}/s, busy samples; {root:.3f} ms per decision). Project frames, "
              "inclusive ms per decision:")
        for f, ms in sorted(((f, m) for f, m in per.items() if _project(f)),
                            key=lambda kv: -kv[1])[:20]:
            print(f"  {ms:6.3f}  {short(f)}")
        print("  leaf frames (own time):")
        for f, ms in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
            print(f"  {ms:6.3f}  {short(f)}")
        out["decide_inclusive"] = {short(f): ms for f, ms in per.items() if ms >= 0.005}
        out["decide_own"] = {short(f): ms for f, ms in own.items() if ms >= 0.005}
    gate = results["gate_http"]
    if "profile_gated" in gate:
        n = gate["profile_requests"]
        sides = {who: (frame_ms(Path(gate[f"profile_{who}"]), per=n),
                       frame_ms(Path(gate[f"profile_{who}"]), per=n, own=True))
                 for who in ("gated", "ungated")}
        (g, g_own), (u, u_own) = sides["gated"], sides["ungated"]
        print(f"\nprofile of hie serve: the same {n} requests (the three queries) by B's "
              f"doctor (gated) and by A's system (ungated), each side alone; busy ms per "
              f"request: gated {max(g.values(), default=0):.3f}, ungated "
              f"{max(u.values(), default=0):.3f}. Project frames, inclusive, by extra:")
        print(f"  {'gated':>7} {'ungated':>7} {'extra':>7}  frame")
        delta = {f: g.get(f, 0.0) - u.get(f, 0.0) for f in {*g, *u} if _project(f)}
        for f, d in sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:30]:
            print(f"  {g.get(f, 0):7.3f} {u.get(f, 0):7.3f} {d:+7.3f}  {short(f)}")
        print("  leaf frames (own time), by extra:")
        own_delta = {f: g_own.get(f, 0.0) - u_own.get(f, 0.0) for f in {*g_own, *u_own}}
        for f, d in sorted(own_delta.items(), key=lambda kv: -abs(kv[1]))[:15]:
            print(f"  {g_own.get(f, 0):7.3f} {u_own.get(f, 0):7.3f} {d:+7.3f}  {short(f)}")
        out["gate_inclusive"] = {short(f): [g.get(f, 0.0), u.get(f, 0.0)] for f in {*g, *u}
                                 if max(g.get(f, 0.0), u.get(f, 0.0)) >= 0.005}
    return out


def _code_state() -> str:
    """The commit measured, and the files changed in the working tree."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else "?"

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
             .splitlines() if line.strip()]
    return git("rev-parse", "--short", "HEAD").strip() + (
        f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=60_000)
    parser.add_argument("--patients", type=int, default=40,
                        help="patients registered at B and searched")
    parser.add_argument("--persons", type=int, default=1000, help="persons with consents")
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--no-remote", action="store_true",
                        help="skip the gate over a remote consent service")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the server during the gated HTTP run (in-process consent)")
    args = parser.parse_args()
    stop_on_sigterm()
    store_dir = STORE_DIR
    if args.quick:
        args.resources, args.patients, args.persons = 3000, 10, 100
        args.decisions, args.rounds = 300, 40
        store_dir = STORE_DIR.with_name("consent-quick")
    manifest_file = store_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else None
    wanted = {"seed": args.seed, "target": args.resources, "patients": args.patients,
              "persons": args.persons}
    if args.rebuild or manifest is None or any(manifest.get(k) != v for k, v in wanted.items()):
        manifest = build(store_dir, seed=args.seed, target=args.resources,
                         patients=args.patients, persons=args.persons)
    else:
        print(f"reusing the store in {store_dir} (built {manifest['built']})")
    print(f"machine: {machine()}")
    print(f"store: {manifest['resources']} resources of {manifest['patients_at_a']} patients "
          f"written by {ORG_A}; {manifest['consents']} consents of "
          f"{len(manifest['consent_persons'])} persons ({manifest['consent_kinds']}); "
          f"{len(manifest['chosen'])} patients registered at {ORG_B}")
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "code": _code_state(),
                               "started": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"code: {results['code']}")
    results["loadavg_start"] = os.getloadavg()
    t0 = time.perf_counter()
    results["decisions"] = asyncio.run(bench_decisions(
        store_dir, manifest, n=args.decisions, concurrency=args.concurrency,
        profile=OUT / "consent-decide.collapsed" if args.profile else None))
    _print_decisions(results["decisions"])
    profile = OUT / "consent-gate.collapsed" if args.profile else None
    results["gate_http"] = bench_gate_http(store_dir, manifest, rounds=args.rounds,
                                           remote=False, profile=profile)
    _print_gate("2a. Gated vs ungated over HTTP (hie serve, 1 worker, consent in-process)",
                results["gate_http"])
    if not args.no_remote:
        results["gate_http_remote"] = bench_gate_http(store_dir, manifest, rounds=args.rounds,
                                                      remote=True, profile=None)
        _print_gate("2b. Gated vs ungated over HTTP (hie serve, 1 worker, consent service "
                    "remote: hie-consent serve, HIE_CONSENT_URL)", results["gate_http_remote"])
    results["gate_asgi"] = asyncio.run(bench_gate_asgi(store_dir, manifest, rounds=args.rounds))
    _print_gate("2c. Gated vs ungated in-process (httpx ASGITransport, consent in-process)",
                results["gate_asgi"])
    results["seconds"] = time.perf_counter() - t0
    results["loadavg_end"] = os.getloadavg()
    print(f"\nmeasured in {results['seconds']:.0f} s; load average at start "
          f"{results['loadavg_start'][0]:.1f}, at end {results['loadavg_end'][0]:.1f} "
          f"(2 cores: other work on the machine slows the figures)")
    if args.profile:
        results["profile"] = _print_profiles(results)
    out = OUT / ("consent-quick.json" if args.quick else "consent.json")
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
