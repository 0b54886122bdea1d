"""Transaction Bundles: the unit a hospital pushes to the exchange.

Each Bundle carries one patient's Patient resource as a conditional create
(``request.ifNoneExist`` on the hospital's MRN, so re-sending or sending the
next batch of the same chart reuses the stored Patient) and about ``size``
resources of that patient's chart, all linked by ``urn:uuid:`` full URLs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from benchmarks.datagen.chart import HOSPITALS, Chart, Entry, Hospital, draw_traits
from benchmarks.datagen.identity import Person, PersonFactory

#: The "today" of generated data: fixed, so that a seed alone fixes the output.
TODAY = date(2026, 11, 1)


def bundle_of(entries: list[Entry]) -> dict:
    """Wrap entries in a FHIR ``transaction`` Bundle (every entry a POST)."""
    out = []
    for e in entries:
        request = {"method": "POST", "url": e.resource["resourceType"]}
        if e.if_none_exist:
            request["ifNoneExist"] = e.if_none_exist
        out.append({"fullUrl": e.full_url, "resource": e.resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def iter_resources(bundle: dict) -> Iterator[dict]:
    """The resources of a Bundle's entries."""
    for entry in bundle.get("entry", ()):
        yield entry["resource"]


def _chart_bundles(chart: Chart, *, first: date, gap: tuple[int, int], size: int,
                   resources: int, until: date | None) -> Iterator[dict]:
    """Bundles of ``chart``'s visits from ``first``, until about ``resources``
    new resources (the Patient counted once) or the day ``until``."""
    rng = chart.rng
    header = chart.patient_entry()
    first_moment = datetime.combine(first, time(8, 30))
    current = [header, *chart.allergy_entries(first_moment)]
    created, day = 0, first
    while until is None or day <= until:
        group = chart.visit(day)
        if len(current) > 1 and len(current) + len(group) > size and len(current) >= size * 0.7:
            created += len(current) - (0 if created == 0 else 1)
            yield bundle_of(current)
            if created >= resources:
                return
            current = [header]
        current.extend(group)
        day += timedelta(days=rng.randint(*gap))
    if len(current) > 1:
        yield bundle_of(current)


class Population:
    """A deterministic stream of people visiting the region's hospitals."""

    def __init__(self, seed: int, *, today: date = TODAY) -> None:
        self.rng = random.Random(seed)
        self.today = today
        self.factory = PersonFactory(self.rng, today)
        self.people: list[Person] = []
        self._next_mrn = {h.code: self.rng.randrange(100_000, 900_000) for h in HOSPITALS}

    def mrn(self, hospital: Hospital) -> str:
        n = self._next_mrn[hospital.code]
        self._next_mrn[hospital.code] = n + 1
        return f"{hospital.mrn_prefix}{n:08d}"

    def next_chart(self) -> Chart:
        """A new person, or (one time in ten) a known person at a new hospital."""
        rng = self.rng
        person: Person | None = None
        if self.people and rng.random() < 0.1:
            person = rng.choice(self.people)
            if len(person.hospitals) == len(HOSPITALS):
                person = None
        if person is None:
            person = self.factory.person()
            draw_traits(rng, person, self.today)
            self.people.append(person)
        hospital = rng.choice([h for h in HOSPITALS if h.code not in person.hospitals])
        mrn = self.mrn(hospital)
        person.hospitals[hospital.code] = mrn
        return Chart(rng, person, hospital, mrn, today=self.today)


def generate_bundles(seed: int, count: int, *, size: int = 50,
                     today: date = TODAY) -> Iterator[dict]:
    """Yield ``count`` transaction Bundles of about ``size`` entries, one
    patient's chart each; the same seed always yields the same Bundles."""
    population = Population(seed, today=today)
    for _ in range(count):
        chart = population.next_chart()
        first = today - timedelta(days=population.rng.randint(120, 6 * 365))
        yield next(_chart_bundles(chart, first=first, gap=(14, 120), size=size,
                                  resources=size, until=today))


@dataclass(frozen=True, slots=True)
class BigPatient:
    """A patient with a long history, for ``$everything``: find them by
    ``identifier=mrn_system|mrn`` once the bundles are stored."""

    mrn_system: str
    mrn: str
    resident_id: str | None
    bundles: list[dict]

    @property
    def resource_count(self) -> int:
        """Resources the bundles create (the repeated Patient counted once)."""
        return sum(len(b["entry"]) for b in self.bundles) - (len(self.bundles) - 1)


def generate_big_patient(seed: int, *, resources: int = 1000, size: int = 50,
                         today: date = TODAY) -> BigPatient:
    """One elderly, chronically ill patient at one hospital with about
    ``resources`` resources (Patient included) over some fifteen years, as
    Bundles of about ``size`` entries that each repeat the conditional
    create of the Patient."""
    population = Population(seed, today=today)
    rng = population.rng
    while True:  # someone with a real chart: old and chronically ill
        person = population.factory.person()
        if (today - person.birth_date).days < 60 * 365 or person.resident_id is None:
            continue
        draw_traits(rng, person, today)
        if len(person.traits["chronic"]) >= 2:
            break
    hospital = HOSPITALS[0]
    mrn = f"99{rng.randrange(10**8):08d}"  # outside the range of generate_bundles' MRNs
    person.hospitals[hospital.code] = mrn
    chart = Chart(rng, person, hospital, mrn, today=today)
    bundles = list(_chart_bundles(chart, first=today - timedelta(days=15 * 365), gap=(7, 30),
                                  size=size, resources=resources, until=None))
    return BigPatient(hospital.mrn_system, mrn, person.resident_id, bundles)
