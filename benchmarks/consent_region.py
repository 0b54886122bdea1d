"""The region the consent benchmark measures: its constants, its servers and
profiling helpers, and the store it builds (patients of hospital A, some also
registered at B, and the persons' consents). Used by ``bench_consent``."""


from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
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
    bundle_stream,
    free_port,
    hie_command,
    http_client,
    percentile,
    post_bundles,
    py_spy,
    register_hospital,
    run_server,
)

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


def load_hospital(org: str, path: Path) -> Hospital:
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


def stats(times: Sequence[float]) -> dict[str, float]:
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


def spy(pid: int, out: Path | None) -> contextlib.AbstractContextManager[None]:
    """py-spy on ``pid`` (and its children) at :data:`SPY_RATE` while the block runs."""
    return py_spy(pid, out, rate=SPY_RATE)


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


def short(frame: str) -> str:
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
    hospital = load_hospital(ORG_A, var_dir / "bench-hospital.pem")
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
        for bodies, counts in bundle_stream(seed, target, 200):
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


