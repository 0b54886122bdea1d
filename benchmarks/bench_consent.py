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
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.common import (
    BENCH_ORG,
    CLIENT_ASSERTION_TYPE,
    FHIR_JSON,
    OUT,
    ROOT,
    Hospital,
    HospitalAuth,
    Server,
    _stop,
    _wait_healthy,
    free_port,
    hie_command,
    http_client,
    machine,
    percentile,
    post_bundles,
    register_hospital,
    run_server,
    stop_on_sigterm,
)
from benchmarks.datagen import generate_bundles

STORE_DIR = OUT / "consent"
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"
ORG_A = BENCH_ORG  # writes every record
ORG_B = "benchb"  # its doctor reads through the gate
OTHER_ORGS = ("benchc", "benchd")  # only named in consents
DOCTOR = "benchb-dr-1"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
B_MRN_SYSTEM = "http://benchb.hospital.example.cn/fhir/sid/mrn"
GOAL_RATIO = 1.5
SENSITIVE = ("PSY", "ETH", "HIV", "STD", "SEX", "GDIS")


# -- helpers -------------------------------------------------------------------

def _run_cli(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([*hie_command(), *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"hie {' '.join(args[:2])} failed: {done.stderr[-2000:]}")


def _save_key(hospital: Hospital, path: Path) -> None:
    path.write_bytes(hospital.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _load_hospital(org: str, path: Path) -> Hospital:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Hospital(org, f"{org}-bench-1", key)


class DoctorAuth(HospitalAuth):
    """A doctor's access tokens: the jwt-bearer grant, the hospital's client
    assertion plus an assertion naming the practitioner and purpose of use."""

    def __init__(self, hospital: Hospital, url: str, practitioner: str,
                 purpose: str = "TREAT") -> None:
        super().__init__(hospital, url, scope="user/*.rs")
        self.practitioner = practitioner
        self.purpose = purpose

    async def token(self) -> str:
        async with self._lock:
            if time.monotonic() > self._expires:
                now = int(time.time())
                doctor = jwt.encode(
                    {"iss": self.hospital.client_id, "sub": self.practitioner,
                     "aud": self.token_url, "iat": now, "exp": now + 240,
                     "jti": str(uuid.uuid4()), "purpose_of_use": self.purpose},
                    self.hospital.key, algorithm="ES384", headers={"kid": self.hospital.kid})
                async with httpx.AsyncClient(timeout=30) as client:
                    resp = await client.post(self.token_url, data={
                        "grant_type": JWT_BEARER, "client_assertion_type": CLIENT_ASSERTION_TYPE,
                        "client_assertion": self._assertion(), "assertion": doctor,
                        "scope": self.scope})
                if resp.status_code != 200:
                    raise RuntimeError(f"token endpoint: HTTP {resp.status_code} {resp.text}")
                body = resp.json()
                self._token = body["access_token"]
                self._expires = time.monotonic() + int(body.get("expires_in", 300)) - 60
            return self._token


def _stats(times: Sequence[float]) -> dict[str, float]:
    return {"n": len(times), "p50_ms": percentile(times, 50) * 1e3,
            "p99_ms": percentile(times, 99) * 1e3,
            "mean_ms": sum(times) / len(times) * 1e3 if times else float("nan")}


@contextlib.contextmanager
def consent_server(store_url: str, var_dir: Path, log: Path, *,
                   base_url: str | None = None) -> Iterator[tuple[str, int]]:
    """``hie-consent serve`` on a free port (its own process group); yields its URL
    and process id.
    ``base_url``: the exchange's (the tokens' issuer and audience); default its own."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = Path(sys.executable).parent / "hie-consent"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hie.gate.cli"]
    env = {**os.environ, "HIE_STORE_URL": store_url, "HIE_VAR_DIR": str(var_dir),
           "HIE_BASE_URL": base_url or url}
    env.pop("HIE_CONSENT_URL", None)
    with log.open("wb") as log_file:
        proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"hie-consent serve exited: "
                                       f"{log.read_text(errors='replace')[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("hie-consent serve did not become healthy")
                time.sleep(0.2)
            yield url, proc.pid
        finally:
            _stop(proc)


SPY_RATE = 500  # samples per second


@contextlib.contextmanager
def spy(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy on ``pid`` (and its children) while the block runs; collapsed stacks
    to ``out`` (nothing when ``out`` is None). Needs ptrace rights."""
    if out is None:
        yield
        return
    out.unlink(missing_ok=True)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                             str(pid), "--subprocesses", "--rate", str(SPY_RATE), "--format",
                             "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


#: Leaf frames of waiting, not working: thread-pool workers blocked on their
#: queue (py-spy does not tell them idle here), uvloop's C loop (epoll).
IDLE_LEAVES = frozenset({"_worker (concurrent/futures/thread.py)",
                         "Runner.run (asyncio/runners.py)"})
_LINE = re.compile(r":\d+\)$")


def frame_ms(collapsed: Path, *, per: int, own: bool = False) -> dict[str, float]:
    """Busy milliseconds per unit of work (``per`` units sampled) under each
    frame (inclusive; with ``own``, as the leaf), line numbers dropped; samples
    of idle threads and the idle event loop left out."""
    totals: dict[str, int] = {}
    if not collapsed.exists():
        return {}
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        if frames[-1] in IDLE_LEAVES:
            continue
        for f in (frames[-1:] if own else dict.fromkeys(frames)):
            totals[f] = totals.get(f, 0) + int(count)
    return {f: n / SPY_RATE * 1e3 / per for f, n in totals.items()}


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for cut in ("site-packages/", str(ROOT) + "/"):
        if cut in where:
            where = where.split(cut, 1)[1]
    return f"{name} ({where})"


@contextlib.contextmanager
def exchange_server(store_url: str, var_dir: Path, log: Path, *, port: int,
                    consent_url: str = "") -> Iterator[Server]:
    """``hie serve --workers 1`` on ``port`` as :func:`benchmarks.common.run_server`
    starts it (A registered already), with ``HIE_CONSENT_URL`` set to ``consent_url``."""
    url = f"http://127.0.0.1:{port}"
    hospital = _load_hospital(ORG_A, var_dir / "bench-hospital.pem")
    env = {**os.environ, "HIE_STORE_URL": store_url, "HIE_BASE_URL": url,
           "HIE_VAR_DIR": str(var_dir), "HIE_CONSENT_URL": consent_url}
    with log.open("wb") as log_file:
        proc = subprocess.Popen([*hie_command(), "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "1"],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        server = Server(proc, url, store_url, log, hospital, HospitalAuth(hospital, url))
        try:
            _wait_healthy(server, 90)
            yield server
        finally:
            _stop(proc)


# -- the store -------------------------------------------------------------------

@dataclass
class Chosen:
    """A patient of A that B has registered too, and what the queries name."""

    pa: str  # A's Patient id
    pb: str  # B's Patient id (same person)
    code: str  # a LOINC code of several of A's Observations of the patient
    obs_id: str  # one of A's Observations of the patient (read by id)


def _stream(seed: int, target: int, chunk: int) -> Iterator[tuple[list[bytes], list[int]]]:
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


async def _all_pages(client: httpx.AsyncClient, url: str, params: dict[str, str]
                     ) -> list[dict]:
    out: list[dict] = []
    next_url: str | None = url
    first = True
    while next_url:
        resp = await client.get(next_url, params=params if first else None)
        resp.raise_for_status()
        body = resp.json()
        out += [e["resource"] for e in body.get("entry", [])]
        next_url = next((link["url"] for link in body.get("link", [])
                         if link["relation"] == "next"), None)
        first = False
    return out


async def _fill(server: Server, hospital_b: Hospital, *, seed: int, target: int,
                patients: int) -> tuple[dict, list[Chosen]]:
    """Post the generated data as A, register ``patients`` of A's patients at B."""
    figures: dict[str, Any] = {}
    async with http_client(server, 8) as a:
        posted = 0
        start = time.perf_counter()
        for bodies, counts in _stream(seed, target, 200):
            res = await post_bundles(a, server.base, bodies, counts, concurrency=8)
            if res.failures:
                raise RuntimeError(f"{len(res.failures)} Bundles failed: {res.failures[:3]}")
            posted += res.resources
        figures.update(resources=posted, ingest_s=time.perf_counter() - start)
        found = await _all_pages(a, f"{server.base}/Patient", {"_count": "1000"})
        with_id = [p for p in found if any(i.get("system") == RESIDENT_ID_SYSTEM
                                           for i in p.get("identifier", []))]
        figures["patients_at_a"] = len(found)
        rng = random.Random(seed)
        rng.shuffle(with_id)
        chosen: list[Chosen] = []
        b_auth = HospitalAuth(hospital_b, server.url)
        async with httpx.AsyncClient(timeout=60, auth=b_auth) as b:
            for pat in with_id:
                if len(chosen) == patients:
                    break
                obs = await _all_pages(a, f"{server.base}/Observation",
                                       {"subject": f"Patient/{pat['id']}", "_count": "500"})
                codes: dict[str, list[str]] = {}
                for o in obs:
                    for c in o.get("code", {}).get("coding", []):
                        if c.get("system") == "http://loinc.org":
                            codes.setdefault(c["code"], []).append(o["id"])
                if not codes:
                    continue
                code, ids = max(codes.items(), key=lambda kv: len(kv[1]))
                resident = next(i for i in pat["identifier"] if i["system"] == RESIDENT_ID_SYSTEM)
                copy = {"resourceType": "Patient",
                        "identifier": [{"system": B_MRN_SYSTEM, "value": f"B{len(chosen):07d}"},
                                       resident],
                        "name": pat.get("name", []), "gender": pat.get("gender"),
                        "birthDate": pat.get("birthDate")}
                if pat.get("telecom"):
                    copy["telecom"] = pat["telecom"]
                resp = await b.post(f"{server.base}/Patient", content=orjson.dumps(copy),
                                    headers={"Content-Type": FHIR_JSON})
                if resp.status_code != 201:
                    raise RuntimeError(f"B's Patient: HTTP {resp.status_code} {resp.text[:500]}")
                chosen.append(Chosen(pat["id"], resp.json()["id"], code, ids[0]))
    return figures, chosen


async def _write_consents(store_url: str, chosen: list[Chosen], *, persons: int,
                          seed: int) -> dict:
    """Consents of ``persons`` persons (the chosen ones first): 1-3 each."""
    from consent import service
    from hie.gate.data import StoreConsentData
    from hie.identity.service import person_id_of
    from hie.store import open_store
    from hie.store.query import SearchQuery

    rng = random.Random(seed + 1)
    store = open_store(store_url)
    await store.open()
    try:
        data = StoreConsentData(store)
        chosen_persons = []
        for c in chosen:
            pa, pb = await person_id_of(store, c.pa), await person_id_of(store, c.pb)
            if pa is None or pa != pb:
                raise RuntimeError(f"B's Patient {c.pb} is not linked to A's {c.pa}")
            chosen_persons.append(pa)
        page = await store.search(SearchQuery("Patient"), limit=100_000)
        everyone: list[str] = []
        for rec in page.resources:
            person = await person_id_of(store, rec.id)
            if person is not None:
                everyone.append(person)
        others = sorted(set(everyone) - set(chosen_persons))
        rng.shuffle(others)
        picked = list(dict.fromkeys(chosen_persons)) + others
        picked = picked[:persons]
        now = datetime.now(UTC)
        kinds: dict[str, int] = {}
        total = 0
        start = time.perf_counter()
        for n, person in enumerate(picked):
            count = rng.choice((1, 1, 2, 2, 3))
            plan: list[str] = []
            if n < len(chosen_persons):
                plan.append("grant-b")  # the searched patients: B may see A's records
            while len(plan) < count:
                plan.append(rng.choices(
                    ("grant-b", "grant-other", "grant-doctor", "refuse-category",
                     "refuse-other", "withdrawn"), weights=(30, 20, 10, 15, 10, 15))[0])
            for kind in plan:
                kinds[kind] = kinds.get(kind, 0) + 1
                total += 1
                start_at = now - timedelta(days=rng.randint(1, 700))
                end_at = (now + timedelta(days=rng.randint(30, 1000))
                          if rng.random() < 0.5 else None)
                labels = rng.sample(SENSITIVE, rng.choice((0, 0, 0, 1, 2)))
                masks = ["telecom"] if rng.random() < 0.2 else []
                if kind == "grant-b":
                    await service.grant_consent(data, person=person, organization=ORG_B,
                                                purposes=["TREAT"], open_labels=labels,
                                                start=start_at, end=end_at, masks=masks)
                elif kind == "grant-other":
                    await service.grant_consent(data, person=person,
                                                organization=rng.choice(OTHER_ORGS),
                                                purposes=rng.choice((["TREAT"],
                                                                     ["TREAT", "ETREAT"])),
                                                open_labels=labels, start=start_at,
                                                end=end_at, masks=masks)
                elif kind == "grant-doctor":
                    await service.grant_consent(data, person=person,
                                                practitioner=rng.choice(
                                                    (DOCTOR, "benchc-dr-1")),
                                                purposes=["TREAT"], open_labels=labels,
                                                start=start_at, end=end_at)
                elif kind == "refuse-category":
                    await service.refuse(data, person=person,
                                         organization=rng.choice((ORG_B, *OTHER_ORGS)),
                                         categories=rng.sample(SENSITIVE, 2))
                elif kind == "refuse-other":
                    await service.refuse(data, person=person, organization=rng.choice(OTHER_ORGS))
                else:
                    made = await service.grant_consent(data, person=person,
                                                       organization=rng.choice(
                                                           (ORG_B, *OTHER_ORGS)),
                                                       purposes=["TREAT"])
                    await service.withdraw_consent(data, person=person, consent_id=made["id"])
        return {"consent_persons": picked, "consents": total, "consent_kinds": kinds,
                "consents_s": time.perf_counter() - start}
    finally:
        await store.close()


def build(store_dir: Path, *, seed: int, target: int, patients: int, persons: int) -> dict:
    """Make the store in ``store_dir`` (emptied first) and return its manifest."""
    shutil.rmtree(store_dir, ignore_errors=True)
    var = store_dir / "var"
    var.mkdir(parents=True)
    store_url = f"sqlite:///{store_dir}/hie.db"
    env = {"HIE_STORE_URL": store_url, "HIE_VAR_DIR": str(var)}
    hospital_b = register_hospital(store_url, var, org=ORG_B)
    _save_key(hospital_b, var / f"{ORG_B}.pem")
    for org in OTHER_ORGS:
        _run_cli(["admin", "create-organization", "--name", f"Hospital {org}", "--id", org], env)
    _run_cli(["admin", "create-practitioner", "--organization", ORG_B, "--name",
              "张伟 主治医师", "--id", DOCTOR], env)
    _run_cli(["admin", "create-practitioner", "--organization", OTHER_ORGS[0], "--name",
              "李敏 副主任医师", "--id", "benchc-dr-1"], env)
    print(f"building the store in {store_dir}: {target} resources as {ORG_A}, "
          f"{patients} patients registered at {ORG_B}, consents of {persons} persons",
          flush=True)
    with run_server(store_url, workers=2, log=store_dir / "serve-build.log",
                    var_dir=var) as server:
        figures, chosen = asyncio.run(_fill(server, hospital_b, seed=seed, target=target,
                                            patients=patients))
    print(f"  {figures['resources']} resources in {figures['ingest_s']:.0f} s; "
          f"{len(chosen)} patients registered at B", flush=True)
    consents = asyncio.run(_write_consents(store_url, chosen, persons=persons, seed=seed))
    print(f"  {consents['consents']} consents of {len(consents['consent_persons'])} persons "
          f"in {consents['consents_s']:.0f} s", flush=True)
    manifest = {"seed": seed, "target": target, "patients": patients, "persons": persons,
                **figures, **consents, "chosen": [c.__dict__ for c in chosen],
                "built": datetime.now(UTC).isoformat(timespec="seconds")}
    (store_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


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
    out = _stats(times)
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
        g, u = _stats(times["gated"]), _stats(times["ungated"])
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
        out["healthz"] = _stats(floor)
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
    hospital_b = _load_hospital(ORG_B, var / f"{ORG_B}.pem")
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
    return any(f"({p}" in _short(frame) for p in ("hie/", "consent/", "schemas/"))


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
            print(f"  {ms:6.3f}  {_short(f)}")
        print("  leaf frames (own time):")
        for f, ms in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
            print(f"  {ms:6.3f}  {_short(f)}")
        out["decide_inclusive"] = {_short(f): ms for f, ms in per.items() if ms >= 0.005}
        out["decide_own"] = {_short(f): ms for f, ms in own.items() if ms >= 0.005}
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
            print(f"  {g.get(f, 0):7.3f} {u.get(f, 0):7.3f} {d:+7.3f}  {_short(f)}")
        print("  leaf frames (own time), by extra:")
        own_delta = {f: g_own.get(f, 0.0) - u_own.get(f, 0.0) for f in {*g_own, *u_own}}
        for f, d in sorted(own_delta.items(), key=lambda kv: -abs(kv[1]))[:15]:
            print(f"  {g_own.get(f, 0):7.3f} {u_own.get(f, 0):7.3f} {d:+7.3f}  {_short(f)}")
        out["gate_inclusive"] = {_short(f): [g.get(f, 0.0), u.get(f, 0.0)] for f in {*g, *u}
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
