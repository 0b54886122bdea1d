"""Identity linking benchmark: patients linked per second, review-queue share,
and how right the links are.

A population drawn with the benchmark data generator (Chinese citizens with
resident ID numbers, some foreign residents without) visits one to three of
the region's hospitals. Every visit is an incoming Patient; the copies at
later hospitals vary the way real records do: the resident ID number missing,
written in its old 15-digit form or mistyped (failing its check), another
phone or address, a homophone typo in the name, day and month swapped, only
the pinyin or only the Chinese name. The Patients arrive in random order.

Each Patient is written the way the write path writes it — its version with
its search indexes and :func:`hie.identity.service.link_patient` in the same
store transaction — in transactions of ``--batch`` Patients (the size of an
ingest Bundle), on a SQLite store in a temporary directory. The same Patients
are then written again *without* linking into a fresh store, so the cost of
linking itself is the difference. Because the generator knows who is who, the
run also counts wrongly merged and missed pairs.

Run: ``.venv/bin/python -m benchmarks.bench_identity`` (``--patients 2000`` for a
quick run). Results go to ``benchmarks/out/identity.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.datagen import HOSPITALS, TODAY
from benchmarks.datagen.identity import RESIDENT_ID_SYSTEM, Person, PersonFactory
from hie.config import Settings
from hie.fhir.search.extract import extract
from hie.identity.model import LinkResult, stamp_now
from hie.identity.service import link_patient
from hie.store import open_store
from hie.store.base import Store, Transaction, WriteRecord

#: Where results go (``benchmarks/out``, as the other benchmarks).
OUT = Path(__file__).resolve().parent / "out"

_HOMOPHONES = {"英": "瑛", "丽": "莉", "静": "晶", "芳": "方", "伟": "炜", "军": "君", "明": "铭",
               "华": "桦", "杰": "洁", "平": "萍", "玲": "琳", "燕": "艳", "红": "虹", "国": "帼"}


@dataclass
class Incoming:
    truth: int  # index of the real person
    source: str
    patient: dict[str, Any]


def _vary(rng: random.Random, p: Person, first: bool) -> tuple[list[dict], str | None, dict,
                                                              str, str]:
    """Names, resident identifier value, address, phone and birth date as one
    hospital recorded them."""
    names = [dict(n) for n in p.names]
    rid = p.resident_id
    phone, address, birth = p.phone, dict(p.address), p.birth_date.isoformat()
    if rid is not None:
        roll = rng.random()
        if roll < (0.05 if first else 0.12):
            rid = None
        elif roll < 0.15 and p.birth_date.year < 2000:
            rid = rid[:6] + rid[8:17]  # the old 15-digit form
        elif roll < 0.16:
            rid = rid[:17] + ("0" if rid[17] != "0" else "1")  # mistyped check
    if first:
        return names, rid, address, phone, birth
    if rng.random() < 0.25:
        phone = "13" + f"{rng.randrange(10**9):09d}"
    if rng.random() < 0.30:
        address = {"use": "home", "text": f"某市某区新街{rng.randint(1, 999)}号"}
    if len(names) == 2:
        roll = rng.random()
        if roll < 0.10:
            names = names[:1]
        elif roll < 0.20:
            names = names[1:]
    if rng.random() < 0.05 and "given" in names[0]:
        given = names[0]["given"][0]
        typo = "".join(_HOMOPHONES.get(c, c) for c in given)
        names[0] = {**names[0], "given": [typo],
                    "text": names[0].get("family", "") + typo}
    if rng.random() < 0.02 and p.birth_date.day <= 12 and p.birth_date.day != p.birth_date.month:
        birth = f"{p.birth_date.year}-{p.birth_date.day:02d}-{p.birth_date.month:02d}"
    return names, rid, address, phone, birth


def population(seed: int, patients: int) -> list[Incoming]:
    """``patients`` incoming Patients of about ``patients / 1.5`` people, shuffled."""
    rng = random.Random(seed)
    factory = PersonFactory(rng, TODAY)
    out: list[Incoming] = []
    person_no = 0
    while len(out) < patients:
        p = factory.person()
        visits = rng.choices((1, 2, 3), weights=(60, 28, 12))[0]
        for i, hospital in enumerate(rng.sample(HOSPITALS, k=visits)):
            names, rid, address, phone, birth = _vary(rng, p, i == 0)
            ids: list[dict] = [{"system": hospital.mrn_system,
                                "value": f"{hospital.mrn_prefix}{rng.randrange(10**8):08d}"}]
            if rid is not None:
                ids.append({"system": RESIDENT_ID_SYSTEM, "value": rid})
            ids += [i for i in p.identifiers if i["system"] != RESIDENT_ID_SYSTEM]
            out.append(Incoming(person_no, f"urn:hie:organization:{hospital.code}", {
                "resourceType": "Patient", "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "identifier": ids, "name": names, "gender": p.gender, "birthDate": birth,
                "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
                "address": [address]}))
        person_no += 1
    out = out[:patients]
    rng.shuffle(out)
    return out


async def _write(store: Store, batch: list[Incoming], settings: Settings,
                 link: bool) -> list[LinkResult]:
    async def run(tx: Transaction) -> list[LinkResult]:
        results = []
        stamp = stamp_now()
        for item in batch:
            p = item.patient
            await tx.put(WriteRecord("Patient", p["id"], 1, stamp, orjson.dumps(p),
                                     source=item.source, index=extract(p)))
            if link:
                results.append(await link_patient(tx, patient=p, source=item.source,
                                                  settings=settings))
        return results

    return await store.transact(run)


async def timed_run(items: list[Incoming], *, batch: int, link: bool,
                    folder: Path) -> tuple[float, list[LinkResult]]:
    """Write every Patient (and link it); return the seconds and the results."""
    store = open_store(f"sqlite:///{folder}/{'link' if link else 'plain'}.db")
    await store.open()
    settings = Settings(var_dir=str(folder / "var"))
    results: list[LinkResult] = []
    try:
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            results += await _write(store, items[i:i + batch], settings, link)
        return time.perf_counter() - start, results
    finally:
        await store.close()


def _pairs(groups: dict[Any, list[Any]]) -> int:
    return sum(len(g) * (len(g) - 1) // 2 for g in groups.values())


def accuracy(items: list[Incoming], results: list[LinkResult]) -> dict[str, Any]:
    """Pairwise: true pairs linked (recall) and linked pairs that are true (precision)."""
    truth: dict[int, list[str]] = defaultdict(list)
    linked: dict[str, list[int]] = defaultdict(list)
    both: Counter[tuple[int, str]] = Counter()
    for item, res in zip(items, results, strict=True):
        truth[item.truth].append(res.person_id)
        linked[res.person_id].append(item.truth)
        both[(item.truth, res.person_id)] += 1
    agree = sum(n * (n - 1) // 2 for n in both.values())
    true_pairs, linked_pairs = _pairs(truth), _pairs(linked)
    return {"true_pairs": true_pairs, "linked_pairs": linked_pairs,
            "correct_pairs": agree, "wrongly_merged_pairs": linked_pairs - agree,
            "missed_pairs": true_pairs - agree,
            "precision": agree / linked_pairs if linked_pairs else 1.0,
            "recall": agree / true_pairs if true_pairs else 1.0}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.common import machine  # psutil: a benchmark-only dependency

    items = population(args.seed, args.patients)
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as tmp:
        folder = Path(tmp)
        link_s, results = await timed_run(items, batch=args.batch, link=True, folder=folder)
        plain_s, _ = await timed_run(items, batch=args.batch, link=False, folder=folder)
    methods = Counter(r.method for r in results)
    reviews = sum(1 for r in results if r.review_id)
    with_rid = sum(1 for i in items if any(x["system"] == RESIDENT_ID_SYSTEM
                                           for x in i.patient["identifier"]))
    out = {
        "machine": machine(), "patients": len(items), "batch": args.batch, "seed": args.seed,
        "people": len({i.truth for i in items}), "with_resident_id": with_rid,
        "write_and_link_s": round(link_s, 2), "write_only_s": round(plain_s, 2),
        "patients_per_s": round(len(items) / link_s, 1),
        "write_only_patients_per_s": round(len(items) / plain_s, 1),
        "link_cost_ms_per_patient": round((link_s - plain_s) / len(items) * 1000, 3),
        "methods": dict(methods), "review_items": reviews,
        "review_share": round(reviews / len(items), 4),
        "accuracy": accuracy(items, results),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT / "identity.json")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

