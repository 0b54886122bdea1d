"""The queries of the search benchmark: picked from the generated data, then
timed over HTTP and directly on the store, interleaved run by run so that both
see the same caches.

A store-only run builds its :class:`~hie.store.query.SearchQuery` with the
exchange's own parser (``parse_search``) before the clock starts and times only
``store.search``; where the HTTP query needs several store calls
(``_revinclude``, ``$everything``) the store-only run makes the same calls.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from benchmarks.common import FHIR_JSON, percentile
from benchmarks.datagen import RESIDENT_ID_SYSTEM, generate_bundles, iter_resources
from benchmarks.datagen.codes import ACUTE, CHRONIC, ICD10CM, LOINC

PAGE = 50  # _count of the searches
EVERYTHING_PAGE = 100


class Getter(Protocol):
    """What the timing needs of an HTTP client: :class:`benchmarks.common.LeanClient`
    (the default) or an ``httpx.AsyncClient`` (``--client httpx``)."""

    async def get(self, url: str, params: Any = None, headers: Any = None) -> Any: ...


@dataclass
class Query:
    """One concrete query: the HTTP request and the store calls it amounts to."""

    path: str  # below the FHIR base, e.g. "Observation"
    params: list[tuple[str, str]]
    store_steps: list[tuple[Any, int]] = field(default_factory=list)  # (SearchQuery, limit)


@dataclass
class QuerySet:
    # name -> (selective?, the concrete queries cycled through)
    searches: dict[str, tuple[bool, list[Query]]]
    everything_patient: str
    everything_types: list[tuple[Any, str]]  # (SearchQuery, type) of the compartment


async def _store_query(store: Any, resource_type: str, params: list[tuple[str, str]],
                       restriction: Any, *, follow: bool = True) -> Any:
    """The exchange's own parse of ``params``, with references to a Patient
    widened to the Patients linked to the same person (as the FHIR layer does
    for searches, not for ``_revinclude``: ``follow=False``), limited to what
    the caller may see."""
    from hie.fhir.search.parse import parse_search
    from hie.identity.service import follow_links

    query = parse_search(resource_type, params).query
    if follow:
        query = await follow_links(store, query)
    return dataclasses.replace(query, restriction=restriction)


async def _patient_id(store: Any, system: str, value: str, restriction: Any) -> str | None:
    query = await _store_query(store, "Patient", [("identifier", f"{system}|{value}")],
                               restriction)
    page = await store.search(query, limit=1)
    return page.resources[0].id if page.resources else None


async def pick_queries(store: Any, *, seed: int, manifest: dict, restriction: Any,
                       picks: int = 40) -> QuerySet:
    """Choose query values from data known to be in the store: the first
    Bundles of the same seed (regenerated, identical to what was posted)."""
    from hie.fhir.operations.everything import compartment_types
    from hie.identity.service import linked_patient_ids
    from hie.store.query import AnyOf, IdMatch, ReferenceMatch, SearchQuery
    from schemas.search_parameters import PATIENT_COMPARTMENT

    rng = random.Random(seed)
    build = manifest["build"]
    # The big patient's Bundles were posted first, then the stream of the seed.
    posted = max(1, min(300, build["bundles"] - build["big_patient"]["bundles"]))
    patients: list[dict] = []
    encounter_days: list[str] = []
    for bundle in generate_bundles(seed, posted):
        resources = list(iter_resources(bundle))
        patient = resources[0]
        obs = [(r["code"]["coding"][0]["code"], r["effectiveDateTime"][:10])
               for r in resources if r["resourceType"] == "Observation"]
        encounter_days += [r["period"]["start"][:10] for r in resources
                           if r["resourceType"] == "Encounter"]
        patients.append({"mrn": patient["identifier"][0], "ids": patient["identifier"],
                         "obs": obs})
    chosen = rng.sample(patients, min(picks, len(patients)))

    async def sq(resource_type: str, params: list[tuple[str, str]], follow: bool = True) -> Any:
        return await _store_query(store, resource_type, params, restriction, follow=follow)

    obs_q, ident_q, rev_q = [], [], []
    for i, p in enumerate(chosen):
        mrn = p["mrn"]
        pid = await _patient_id(store, mrn["system"], mrn["value"], restriction)
        if pid is None:
            raise RuntimeError(f"patient {mrn['value']} is not in the store")
        code, day = rng.choice(p["obs"])
        year = day[:4]  # the calendar year of one of the patient's observations
        params = [("patient", f"Patient/{pid}"), ("code", f"{LOINC}|{code}"),
                  ("date", f"ge{year}-01-01"), ("date", f"le{year}-12-31")]
        obs_q.append(Query("Observation", [*params, ("_count", str(PAGE))],
                           [(await sq("Observation", params), PAGE)]))
        rid = [x["value"] for x in p["ids"] if x["system"] == RESIDENT_ID_SYSTEM]
        ident = (f"{RESIDENT_ID_SYSTEM}|{rid[0]}" if rid and i % 2
                 else f"{mrn['system']}|{mrn['value']}")
        ident_q.append(Query("Patient", [("identifier", ident)],
                             [(await sq("Patient", [("identifier", ident)]), PAGE)]))
        by_mrn = [("identifier", f"{mrn['system']}|{mrn['value']}")]
        rev_q.append(Query("Patient", [*by_mrn, ("_revinclude", "Encounter:subject")],
                           [(await sq("Patient", by_mrn), PAGE),
                            (await sq("Encounter", [("subject", f"Patient/{pid}")], False), 1000)]))

    codes = [dx.code for dx, _ in CHRONIC] + [dx.code for dx in ACUTE]
    cond_q = [Query("Condition", [("code", f"{ICD10CM}|{c}"), ("_count", str(PAGE))],
                    [(await sq("Condition", [("code", f"{ICD10CM}|{c}")]), PAGE)])
              for c in codes]
    days = rng.sample(encounter_days, min(picks, len(encounter_days)))
    enc_q = [Query("Encounter", [("date", d), ("_count", str(PAGE))],
                   [(await sq("Encounter", [("date", d)]), PAGE)]) for d in days]

    big = build["big_patient"]
    big_id = await _patient_id(store, big["mrn_system"], big["mrn"], restriction)
    if big_id is None:
        raise RuntimeError("the $everything patient is not in the store")
    # as $everything does: the person's Patients at every hospital
    ids = tuple(await linked_patient_ids(store, big_id))
    every: list[tuple[Any, str]] = []
    for t in compartment_types():
        if t == "Patient":
            terms: tuple[Any, ...] = (IdMatch(ids),)
        else:
            terms = tuple(ReferenceMatch(p, i, "Patient")
                          for p in PATIENT_COMPARTMENT[t] for i in ids)
        every.append((SearchQuery(t, (AnyOf(terms),), restriction=restriction), t))
    return QuerySet({
        "Observation: patient + code + date range": (True, obs_q),
        "Condition: code (first page)": (False, cond_q),
        "Encounter: date (one day)": (True, enc_q),
        "Patient: identifier": (True, ident_q),
        "Patient: identifier + _revinclude=Encounter:subject": (True, rev_q),
    }, big_id, every)


def _matches(body: bytes) -> tuple[int, int]:
    bundle = orjson.loads(body)
    entries = bundle.get("entry", [])
    return (sum(e.get("search", {}).get("mode", "match") == "match" for e in entries),
            len(entries))


async def _http(client: Getter, url: str, params: list[tuple[str, str]]) -> bytes:
    # params=None, not []: httpx replaces the URL's own query with an empty one.
    resp = await client.get(url, params=params or None, headers={"Accept": FHIR_JSON})
    if resp.status_code != 200:
        raise RuntimeError(f"GET {resp.url}: HTTP {resp.status_code} {resp.text[:500]}")
    return resp.content


async def _everything_http(client: Getter, base: str, pid: str) -> tuple[int, int]:
    """Page through ``$everything``; return (entries, pages)."""
    url: str | None = f"{base}/Patient/{pid}/$everything"
    params: list[tuple[str, str]] = [("_count", str(EVERYTHING_PAGE))]
    entries = pages = 0
    while url:
        if pages > 1000:
            raise RuntimeError(f"$everything: more than 1000 pages; paging does not end ({url})")
        bundle = orjson.loads(await _http(client, url, params))
        params = []
        entries += len(bundle.get("entry", []))
        pages += 1
        url = next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None)
    return entries, pages


async def _everything_store(store: Any, types: list[tuple[Any, str]]) -> int:
    """What ``$everything`` asks of the store: a count per type, then every page."""
    from hie.store.query import Cursor

    for q, _ in types:
        await store.count(q)
    found = 0
    for q, _ in types:
        cursor: Cursor | None = None
        while True:
            page = await store.search(q, limit=EVERYTHING_PAGE, cursor=cursor)
            found += len(page.resources)
            if page.next is None:
                break
            cursor = page.next
    return found


def _summary(name: str, selective: bool, matches: str, http: list[float],
             store: list[float]) -> dict:
    h50, s50 = percentile(http, 50), percentile(store, 50)
    return {"name": name, "selective": selective, "matches": matches, "runs": len(http),
            "http_p50": h50, "http_p99": percentile(http, 99), "store_p50": s50,
            "store_p99": percentile(store, 99), "ratio": h50 / s50 if s50 else float("inf")}


async def http_floor(client: Getter, url: str, base: str, *,
                     runs: int) -> list[dict]:
    """The fixed cost of one request, whatever it asks: ``GET /healthz`` (no
    store) and ``GET /fhir/metadata`` (through the FHIR router, no search), in
    milliseconds, client included. What a search adds on top of these is the
    search's own work (authentication, consent gate, audit, store, Bundle)."""
    out = []
    for name, target in (("GET /healthz (HTTP floor)", f"{url}/healthz"),
                         ("GET /fhir/metadata (FHIR route, no search)", f"{base}/metadata")):
        times: list[float] = []
        for i in range(-10, runs):
            t0 = time.perf_counter()
            resp = await client.get(target)
            elapsed = (time.perf_counter() - t0) * 1000
            if resp.status_code != 200:
                raise RuntimeError(f"GET {target}: HTTP {resp.status_code}")
            if i >= 0:
                times.append(elapsed)
        out.append({"name": name, "selective": False, "matches": "-", "runs": len(times),
                    "http_p50": percentile(times, 50), "http_p99": percentile(times, 99),
                    "store_p50": 0.0, "store_p99": 0.0, "ratio": float("nan")})
        print(f"  {name}: p50 {out[-1]['http_p50']:.2f} ms", flush=True)
    return out


async def time_queries(client: Getter, base: str, store: Any, queries: QuerySet,
                       *, runs: int, everything_runs: int) -> list[dict]:
    """Time every query over HTTP and on the store; milliseconds."""
    results = []
    for name, (selective, picks) in queries.searches.items():
        http_ms: list[float] = []
        store_ms: list[float] = []
        counted: list[tuple[int, int, int]] = []  # (http matches, http entries, store found)
        for i in range(-min(10, len(picks)), runs):  # negative: untimed warm-up
            q = picks[i % len(picks)]
            t0 = time.perf_counter()
            body = await _http(client, f"{base}/{q.path}", q.params)
            t1 = time.perf_counter()
            found = 0
            for sq, limit in q.store_steps:
                found += len((await store.search(sq, limit=limit)).resources)
            t2 = time.perf_counter()
            if i < 0:
                continue
            http_ms.append((t1 - t0) * 1000)
            store_ms.append((t2 - t1) * 1000)
            if i < len(picks):
                counted.append((*_matches(body), found))
        mean_http = sum(c[1] for c in counted) / len(counted)
        mean_store = sum(c[2] for c in counted) / len(counted)
        matches = f"{mean_http:.1f} entries (store {mean_store:.1f})"
        results.append(_summary(name, selective, matches, http_ms, store_ms))
        print(f"  {name}: HTTP p50 {results[-1]['http_p50']:.1f} ms, store p50 "
              f"{results[-1]['store_p50']:.1f} ms, {matches}", flush=True)

    http_ms, store_ms = [], []
    entries = pages = found = 0
    for i in range(-1, everything_runs):
        t0 = time.perf_counter()
        entries, pages = await _everything_http(client, base, queries.everything_patient)
        t1 = time.perf_counter()
        found = await _everything_store(store, queries.everything_types)
        t2 = time.perf_counter()
        if i >= 0:
            http_ms.append((t1 - t0) * 1000)
            store_ms.append((t2 - t1) * 1000)
    results.append(_summary(f"Patient/$everything, all {pages} pages of {EVERYTHING_PAGE}",
                            False, f"{entries} entries (store {found})", http_ms, store_ms))
    print(f"  $everything: HTTP p50 {results[-1]['http_p50']:.0f} ms, store p50 "
          f"{results[-1]['store_p50']:.0f} ms, {entries} entries in {pages} pages", flush=True)
    return results
