"""One patient's chart at one hospital, written encounter by encounter.

A :class:`Chart` walks forward in time from the patient's first visit. Each
visit (:meth:`Chart.visit`) yields the Encounter and everything recorded in
it: vital signs, lab panels with their DiagnosticReport, new diagnoses,
prescriptions, now and then a procedure or a vaccination. Chronic diagnoses
are drawn once per person (by age and prevalence) and drive prescriptions and
lab values at every hospital that sees the person.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from benchmarks.datagen import resources as r
from benchmarks.datagen.codes import (
    ACUTE,
    ALLERGENS,
    CHRONIC,
    DIASTOLIC,
    ENCOUNTER_CLASSES,
    PANELS,
    PROCEDURES,
    REACTIONS,
    SYSTOLIC,
    VACCINES,
    VITALS,
    Diagnosis,
)
from benchmarks.datagen.identity import V2_0203, Person

_DOCTORS = ("王建国 主任医师", "李敏 副主任医师", "张伟 主治医师", "陈静 主治医师",
            "刘洋 住院医师", "赵丽 主治医师")


@dataclass(frozen=True, slots=True)
class Hospital:
    code: str
    name: str
    mrn_prefix: str

    @property
    def mrn_system(self) -> str:
        """The hospital's own MRN namespace (fictitious domain)."""
        return f"http://{self.code}.hospital.example.cn/fhir/sid/mrn"


HOSPITALS: tuple[Hospital, ...] = (
    Hospital("jnry", "江南第一人民医院", "10"),
    Hospital("bjxh", "滨江协和医院", "20"),
    Hospital("mhzy", "明湖中医医院", "30"),
    Hospital("ljfy", "临江妇幼保健院", "40"),
    Hospital("dhrm", "东湖人民医院", "50"),
)


@dataclass(slots=True)
class Entry:
    """One transaction entry: its ``urn:uuid:`` full URL and the resource."""

    full_url: str
    resource: dict
    if_none_exist: str | None = None


def new_url(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def age_on(person: Person, day: date) -> int:
    b = person.birth_date
    return day.year - b.year - ((day.month, day.day) < (b.month, b.day))


def draw_traits(rng: random.Random, person: Person, today: date) -> None:
    """Give ``person`` a body (height, BMI) and chronic diagnoses by age."""
    age = age_on(person, today)
    male = person.gender == "male"
    if age < 18:
        height = 52 + min(age, 17) * 6.8 + rng.gauss(0, 4)
        bmi = rng.gauss(17 + age * 0.2, 1.8)
    else:
        height = rng.gauss(170 if male else 159, 6)
        bmi = rng.gauss(23.8, 3.2)
    chronic: list[Diagnosis] = []
    for dx, prevalence in CHRONIC:
        if age >= dx.min_age and rng.random() < prevalence * (1.0 if age >= 40 else 0.3):
            chronic.append(dx)
    person.traits = {"height": round(height, 1), "bmi": max(bmi, 13.0), "chronic": chronic,
                     "allergy": (rng.choice(ALLERGENS), rng.choice(REACTIONS))
                     if rng.random() < 0.12 else None}


class Chart:
    """Writes the record of ``person`` at ``hospital`` (MRN ``mrn``)."""

    def __init__(self, rng: random.Random, person: Person, hospital: Hospital, mrn: str,
                 *, today: date) -> None:
        self.rng = rng
        self.person = person
        self.hospital = hospital
        self.mrn = mrn
        self.today = today
        self.patient_url = new_url(rng)
        self.recorded: set[str] = set()  # chronic ICD-10 codes already on this chart

    def patient_entry(self) -> Entry:
        """The Patient, created only if this hospital's MRN is not known yet."""
        p = self.person
        mrn_id = {
            "use": "usual",
            "type": {"coding": [{"system": V2_0203, "code": "MR",
                                 "display": "Medical record number"}], "text": "病案号"},
            "system": self.hospital.mrn_system, "value": self.mrn,
            "assigner": {"display": self.hospital.name},
        }
        patient = {
            "resourceType": "Patient",
            "identifier": [mrn_id, *p.identifiers],
            "active": True,
            "name": p.names,
            "telecom": [{"system": "phone", "value": p.phone, "use": "mobile"}],
            "gender": p.gender,
            "birthDate": p.birth_date.isoformat(),
            "address": [p.address],
        }
        return Entry(self.patient_url, patient,
                     f"identifier={self.hospital.mrn_system}|{self.mrn}")

    def allergy_entries(self, when: datetime) -> list[Entry]:
        found = self.person.traits.get("allergy")
        if not found:
            return []
        allergen, reaction = found
        return [Entry(new_url(self.rng), r.allergy(allergen=allergen, reaction=reaction,
                                                   patient=self.patient_url, recorded=when))]

    def visit(self, day: date) -> list[Entry]:
        """Everything recorded in one encounter starting on ``day``."""
        rng = self.rng
        cls = rng.choices(("AMB", "EMER", "IMP"), weights=(75, 13, 12))[0]
        cls_display, departments = ENCOUNTER_CLASSES[cls]
        if cls == "AMB":
            start = datetime.combine(day, time(8)) + timedelta(minutes=rng.randrange(540))
            end = start + timedelta(minutes=rng.randint(8, 40))
        elif cls == "EMER":
            start = datetime.combine(day, time()) + timedelta(minutes=rng.randrange(1440))
            end = start + timedelta(hours=rng.randint(2, 9), minutes=rng.randrange(60))
        else:
            start = datetime.combine(day, time(8)) + timedelta(minutes=rng.randrange(600))
            end = start + timedelta(days=rng.randint(3, 10), hours=rng.randint(0, 6))
        enc_url = new_url(rng)
        out: list[Entry] = []
        chronic: list[Diagnosis] = self.person.traits["chronic"]
        age = age_on(self.person, day)

        # Diagnoses: chronic problems the first time this chart sees them, and
        # an acute problem for most emergency and inpatient stays.
        diagnosed: list[tuple[Diagnosis, str]] = []
        for dx in chronic:
            if dx.code not in self.recorded:
                self.recorded.add(dx.code)
                onset = start - timedelta(days=rng.randint(30, 3650))
                url = new_url(rng)
                out.append(Entry(url, r.condition(dx=dx, patient=self.patient_url,
                                                  encounter=enc_url, onset=onset,
                                                  recorded=start, abated=None)))
                diagnosed.append((dx, url))
        acute: Diagnosis | None = None
        if cls != "AMB" or rng.random() < 0.25:
            pool = [d for d in ACUTE if d.code != "K35.80" or cls == "IMP"]
            acute = rng.choice(pool)
            url = new_url(rng)
            out.append(Entry(url, r.condition(
                dx=acute, patient=self.patient_url, encounter=enc_url, onset=start,
                recorded=start, abated=end + timedelta(days=rng.randint(3, 14)))))
            diagnosed.append((acute, url))
        shifts: dict[str, float] = {}
        for dx in [*chronic, *([acute] if acute else [])]:
            for code, delta in dx.lab_shift:
                shifts[code] = shifts.get(code, 0.0) + delta

        out.extend(self._vitals(cls, start, end, enc_url, shifts, age))
        out.extend(self._labs(cls, start, end, enc_url, shifts, chronic, acute))
        out.extend(self._prescriptions(cls, start, end, enc_url, chronic, acute, diagnosed))
        out.extend(self._extras(start, end, enc_url, chronic, acute, diagnosed, age))

        enc = r.encounter(cls=cls, cls_display=cls_display, department=rng.choice(departments),
                          patient=self.patient_url, start=start, end=end,
                          hospital=self.hospital.name, diagnoses=[u for _, u in diagnosed])
        return [Entry(enc_url, enc), *out]

    def _vitals(self, cls: str, start: datetime, end: datetime, enc: str,
                shifts: dict[str, float], age: int) -> list[Entry]:
        rng, out = self.rng, []
        rounds = 1 if cls != "IMP" else min((end - start).days, 4)
        for i in range(rounds):
            when = start + timedelta(days=i, minutes=rng.randint(5, 50))
            if age >= 3:
                out.append(r.blood_pressure(
                    systolic=int(r.draw(rng, SYSTOLIC, shifts.get("8480-6", 0))),
                    diastolic=int(r.draw(rng, DIASTOLIC, shifts.get("8462-4", 0))),
                    patient=self.patient_url, encounter=enc, when=when))
            codes = ["8867-4"]
            if cls != "AMB" or rng.random() < 0.3:
                codes += ["8310-5", "9279-1", "59408-5"]
            for code in codes:
                m = VITALS[code]
                out.append(r.observation(m=m, value=r.draw(rng, m, shifts.get(code, 0)),
                                         category="vital-signs", patient=self.patient_url,
                                         encounter=enc, when=when))
            if i == 0 and rng.random() < 0.4:
                height = self.person.traits["height"]
                weight = round(self.person.traits["bmi"] * (height / 100) ** 2
                               + rng.gauss(0, 1), 1)
                bmi = round(weight / (height / 100) ** 2, 1)
                for code, value in (("29463-7", weight), ("8302-2", height),
                                    ("39156-5", bmi)):
                    out.append(r.observation(m=VITALS[code], value=value,
                                             category="vital-signs",
                                             patient=self.patient_url, encounter=enc,
                                             when=when))
        return [Entry(new_url(rng), o) for o in out]

    def _labs(self, cls: str, start: datetime, end: datetime, enc: str,
              shifts: dict[str, float], chronic: list[Diagnosis],
              acute: Diagnosis | None) -> list[Entry]:
        rng = self.rng
        codes = {dx.code for dx in chronic}
        if cls == "AMB":
            if rng.random() > 0.55:
                return []
            wanted = {"58410-2"} if acute else set()
            if codes & {"E11.9"}:
                wanted |= {"4548-4", "51990-0"}
            if codes & {"E78.5", "I25.10"}:
                wanted.add("57698-3")
            if codes & {"N18.9", "I10"}:
                wanted.add("51990-0")
            if not wanted:
                wanted = {rng.choice(("58410-2", "51990-0", "57698-3", "24325-3"))}
        elif cls == "EMER":
            wanted = {"58410-2", "51990-0"}
        else:
            wanted = {"58410-2", "51990-0", "24325-3"}
        out: list[Entry] = []
        collected = start + timedelta(minutes=rng.randint(10, 90))
        issued = collected + timedelta(hours=rng.randint(1, 6), minutes=rng.randrange(60))
        for code in sorted(wanted):
            panel = PANELS[code]
            results = []
            for m in panel.members:
                obs = r.observation(m=m, value=r.draw(rng, m, shifts.get(m.code, 0)),
                                    category="laboratory", patient=self.patient_url,
                                    encounter=enc, when=collected, issued=issued)
                url = new_url(rng)
                out.append(Entry(url, obs))
                results.append(url)
            out.append(Entry(new_url(rng), r.diagnostic_report(
                panel=panel, patient=self.patient_url, encounter=enc, results=results,
                collected=collected, issued=issued, lab=f"{self.hospital.name}检验科")))
        return out

    def _prescriptions(self, cls: str, start: datetime, end: datetime, enc: str,
                       chronic: list[Diagnosis], acute: Diagnosis | None,
                       diagnosed: list[tuple[Diagnosis, str]]) -> list[Entry]:
        rng, out = self.rng, []
        in_bundle = {dx.code: url for dx, url in diagnosed}
        doctor = rng.choice(_DOCTORS)
        for dx in chronic:
            for drug in dx.drugs:
                if cls == "AMB" and rng.random() > 0.7:
                    continue
                days = 30 if cls == "AMB" else 7
                active = (self.today - start.date()).days <= days * 3
                out.append(r.medication_request(
                    drug=drug, dx=dx, dx_url=in_bundle.get(dx.code), patient=self.patient_url,
                    encounter=enc, authored=end - timedelta(minutes=rng.randint(1, 5)),
                    active=active, doctor=doctor, days=days))
        if acute is not None:
            for drug in acute.drugs:
                out.append(r.medication_request(
                    drug=drug, dx=acute, dx_url=in_bundle.get(acute.code),
                    patient=self.patient_url, encounter=enc,
                    authored=start + timedelta(minutes=rng.randint(20, 120)),
                    active=False, doctor=doctor, days=rng.choice((3, 5, 7))))
        return [Entry(new_url(rng), o) for o in out]

    def _extras(self, start: datetime, end: datetime, enc: str, chronic: list[Diagnosis],
                acute: Diagnosis | None, diagnosed: list[tuple[Diagnosis, str]],
                age: int) -> list[Entry]:
        rng, out = self.rng, []
        codes = {dx.code for dx in chronic} | ({acute.code} if acute else set())
        in_bundle = {dx.code: url for dx, url in diagnosed}
        for proc in PROCEDURES:
            reasons = [c for c in proc[3] if c in codes]
            chance = 0.9 if acute and acute.code in proc[3] else 0.04 if reasons else 0.005
            if (reasons or not proc[3]) and rng.random() < chance:
                when = start + timedelta(minutes=rng.randint(30, 240))
                when = min(when, end)
                reason = in_bundle.get(reasons[0]) if reasons else None
                out.append(r.procedure(code=proc[:3], patient=self.patient_url,
                                       encounter=enc, when=when, reason=reason))
        if rng.random() < (0.08 if age >= 60 else 0.03):
            vaccine = rng.choice(VACCINES)
            lot = f"{rng.choice('ABCDEFGH')}{start.year}{rng.randrange(10**5):05d}"
            out.append(r.immunization(vaccine=vaccine, patient=self.patient_url, encounter=enc,
                                      when=start + timedelta(minutes=rng.randint(5, 30)),
                                      lot=lot))
        return [Entry(new_url(rng), o) for o in out]
