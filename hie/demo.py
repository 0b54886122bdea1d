"""``hie demo``: a small region to try the exchange with.

Seeds three hospitals with their keys, two doctors each, eight patients with
records at one or two hospitals (the same resident ID number at two hospitals
links them to one regional person) and three of their consents, and writes a
credentials file
that lets anyone act as each of them: each hospital's private key and the
portal password of each patient (see ``design.md`` for the format).

Everything is written through the same services as the API (validation,
tenancy, Provenance, sensitivity labels, identity links, audit), as the
hospital that owns it. Running it again on the same store reuses what exists
and rotates nothing; the credentials file is rewritten with fresh portal
passwords only for accounts it creates.
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent import service as consent_service
from hie.auth.jwk import new_client_key
from hie.config import Settings
from hie.context import RequestContext
from hie.demo_imaging import seed_study
from hie.dicomweb.studies import write_pending
from hie.fhir import writes
from hie.fhir.search.parse import parse_search
from hie.fhir.validate import validate_resource
from hie.gate.data import StoreConsentData
from hie.identity.resident_id import check_char
from hie.identity.service import person_id_of
from hie.registry import service as registry
from hie.store.base import Store
from hie.store.query import Restriction, SearchQuery

MRN_SYSTEM = "urn:oid:2.16.156.10011.2.{n}.1"  # each hospital's MRN domain


@dataclass(frozen=True)
class Hospital:
    id: str
    name: str
    doctors: tuple[tuple[str, str], ...]  # (id, name)


HOSPITALS = (
    Hospital("cityfirst", "市第一人民医院 City First People's Hospital",
             (("cityfirst-dr-li", "李明 Li Ming"), ("cityfirst-dr-zhou", "周芳 Zhou Fang"))),
    Hospital("tcmhosp", "市中医院 Municipal TCM Hospital",
             (("tcmhosp-dr-chen", "陈伟 Chen Wei"), ("tcmhosp-dr-sun", "孙丽 Sun Li"))),
    Hospital("provincial", "省人民医院 Provincial People's Hospital",
             (("provincial-dr-wu", "吴强 Wu Qiang"), ("provincial-dr-he", "何静 He Jing"))),
)

#: (family, given, gender, birth date, region code, hospitals, conditions)
PATIENTS = (
    ("王", "秀英", "female", "1962-04-17", "110105", ("cityfirst", "tcmhosp"), ("I10", "E11.9")),
    ("张", "伟", "male", "1975-09-02", "310104", ("cityfirst", "provincial"), ("J45.909",)),
    ("李", "娜", "female", "1988-12-23", "440106", ("tcmhosp",), ("F32.1",)),
    ("刘", "洋", "male", "1990-06-30", "330106", ("provincial", "tcmhosp"), ("I10", "F41.1")),
    ("陈", "静", "female", "1955-01-08", "510107", ("cityfirst",), ("E11.9", "N18.3")),
    ("杨", "磊", "male", "1983-03-15", "420106", ("provincial",), ("K21.9",)),
    ("Zhao", "Mei", "female", "1999-08-11", "120101", ("cityfirst", "provincial"), ("J06.9",)),
    ("黄", "强", "male", "1948-11-27", "320102", ("tcmhosp", "cityfirst"), ("I25.10", "I10")),
)

_CONDITION_TEXT = {"I10": "Essential hypertension", "E11.9": "Type 2 diabetes mellitus",
                   "J45.909": "Asthma", "F32.1": "Moderate depressive episode",
                   "F41.1": "Generalized anxiety disorder", "N18.3": "Chronic kidney disease",
                   "K21.9": "Gastro-oesophageal reflux disease", "J06.9": "Upper respiratory "
                   "infection", "I25.10": "Atherosclerotic heart disease"}


def resident_id(region: str, birth: str, seq: int, gender: str) -> str:
    """A valid GB 11643 number (the sequence is odd for men, even for women)."""
    seq = seq * 2 + (1 if gender == "male" else 0)
    first17 = f"{region}{birth.replace('-', '')}{seq % 1000:03d}"
    return first17 + check_char(first17)


def _patient(h: int, mrn: str, family: str, given: str, gender: str, birth: str,
             rid: str, settings: Settings, rng: random.Random) -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"system": MRN_SYSTEM.format(n=h), "value": mrn},
                           {"system": settings.resident_id_system, "value": rid}],
            "name": [{"family": family, "given": [given], "text": family + given}],
            "gender": gender, "birthDate": birth,
            "telecom": [{"system": "phone",
                         "value": f"1{rng.randint(3, 9)}{rng.randint(0, 10**9 - 1):09d}"}],
            "address": [{"city": "北京市", "line": [f"朝阳区建国路{rng.randint(1, 300)}号"]}]}


def _records(pat: str, h: int, conditions: tuple[str, ...], rng: random.Random
             ) -> list[dict[str, Any]]:
    enc = f"urn:uuid:{h:08d}-0000-4000-8000-{rng.randint(0, 16**12 - 1):012x}"
    day = f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}"
    out: list[dict[str, Any]] = [
        {"fullUrl": enc, "resource": {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "subject": {"reference": pat},
            "period": {"start": f"{day}T09:00:00+08:00", "end": f"{day}T09:40:00+08:00"}}}]
    for code, unit, low, high, name in (("8480-6", "mm[Hg]", 110, 160, "Systolic BP"),
                                        ("8462-4", "mm[Hg]", 65, 100, "Diastolic BP"),
                                        ("2339-0", "mmol/L", 4, 11, "Glucose")):
        out.append({"resource": {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs" if unit == "mm[Hg]" else "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code,
                                 "display": name}]},
            "subject": {"reference": pat}, "encounter": {"reference": enc},
            "effectiveDateTime": f"{day}T09:10:00+08:00",
            "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}}})
    for icd in conditions:
        out.append({"resource": {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": icd,
                                 "display": _CONDITION_TEXT.get(icd, icd)}]},
            "subject": {"reference": pat}, "encounter": {"reference": enc},
            "recordedDate": day}})
    return out


async def seed(store: Store, settings: Settings, *, hooks: list[writes.WriteHook],
               seed_value: int = 2026) -> dict[str, Any]:
    """Seed the region; return the credentials document."""
    rng = random.Random(seed_value)
    creds: dict[str, Any] = {"base_url": settings.base_url.rstrip("/"),
                             "token_url": settings.base_url.rstrip("/") + "/auth/token",
                             "hospitals": [], "patients": []}
    for hosp in HOSPITALS:
        kid = f"{hosp.id}-demo-1"
        pem, jwk = new_client_key("ES384", kid=kid)
        org = await registry.get_organization(store, id=hosp.id)
        if org is None:
            await registry.create_organization(store, name=hosp.name, id=hosp.id,
                                               jwks={"keys": [jwk]})
        else:  # a re-run: register this run's key beside the earlier ones
            await registry.add_key(store, organization=hosp.id, jwk=jwk | {"kid": kid +
                                   "-" + secrets.token_hex(3)})
            jwk = (await registry.get_organization(store, id=hosp.id)).keys[-1]
            kid = jwk["kid"]
        for prac_id, name in hosp.doctors:
            if await registry.get_practitioner(store, id=prac_id) is None:
                await registry.create_practitioner(store, organization=hosp.id, name=name,
                                                   id=prac_id)
        creds["hospitals"].append({
            "id": hosp.id, "name": hosp.name, "client_id": hosp.id, "kid": kid,
            "alg": "ES384", "private_key_pem": pem,
            "practitioners": [{"id": i, "name": n} for i, n in hosp.doctors]})
    index = {h.id: n for n, h in enumerate(HOSPITALS, start=1)}
    for n, (family, given, gender, birth, region, where, conditions) in enumerate(PATIENTS):
        rid = resident_id(region, birth, n + 1, gender)
        person = None
        for hosp_id in where:
            h = index[hosp_id]
            mrn = f"{hosp_id[:2].upper()}{100000 + n}"
            pat = "urn:uuid:" + f"{h:08d}-{n:04d}-4000-8000-000000000000"
            entries = [{"fullUrl": pat,
                        "resource": _patient(h, mrn, family, given, gender, birth, rid,
                                             settings, rng)},
                       *_records(pat, h, conditions, rng)]
            patient_id = await _push(store, hooks, hosp_id, entries, mrn, h)
            if hosp_id == where[0]:  # an imaging study at the patient's first hospital
                await seed_study(store, hooks, hospital=hosp_id,
                                 mrn_system=MRN_SYSTEM.format(n=h), mrn=mrn,
                                 name=f"={family}^{given}", birth=birth.replace("-", ""),
                                 sex="M" if gender == "male" else "F",
                                 rng=random.Random(f"{seed_value}-imaging-{n}"))
            person = person or await person_id_of(store, patient_id)
        username = f"patient{n + 1}"
        password = secrets.token_urlsafe(9)
        if person is not None and await registry.get_account(store, username=username) is None:
            await registry.create_account(store, username=username, password=password,
                                          person_id=person)
        else:
            password = None
        creds["patients"].append({"person_id": person, "name": family + given,
                                  "resident_id": rid, "username": username,
                                  "password": password, "hospitals": list(where)})
    await _consents(store, creds["patients"])
    await write_pending(store, hooks)  # the studies' ImagingStudy resources
    return creds


#: (patient index, hospital granted, categories opened) — the demo's consents:
#: 张伟 lets the provincial hospital see his records for treatment, 刘洋 lets the
#: city hospital see his except mental health, 黄强 lets the provincial hospital
#: see everything including mental health.
CONSENTS = ((1, "provincial", ()), (3, "cityfirst", ()), (7, "provincial", ("PSY",)))


async def _consents(store: Store, patients: list[dict[str, Any]]) -> None:
    """Grant the demo's consents (once: a re-run finds them in place)."""
    data = StoreConsentData(store)
    for n, hospital, labels in CONSENTS:
        person = patients[n]["person_id"]
        if person is None:
            continue
        existing = await consent_service.list_consents(data, person=person)
        if any(c.get("status") == "active" for c in existing):
            continue
        await consent_service.grant_consent(data, person=person, organization=hospital,
                                            purposes=["TREAT"], open_labels=list(labels))


async def _push(store: Store, hooks: list[writes.WriteHook], hosp_id: str,
                entries: list[dict[str, Any]], mrn: str, h: int) -> str:
    """Write one hospital's Bundle as that hospital; return the Patient id. A
    patient the hospital already has (a re-run) is left as it is."""
    ctx = RequestContext(organization=hosp_id)
    query = parse_search("Patient", [("identifier", f"{MRN_SYSTEM.format(n=h)}|{mrn}")]).query
    existing = await store.search(SearchQuery("Patient", query.where, restriction=Restriction(
        sources=frozenset({ctx.source}))), limit=1)
    if existing.resources:
        return existing.resources[0].id
    batch: list[writes.WriteEntry] = []
    for i, e in enumerate(entries):
        resource = e["resource"]
        validate_resource(resource)
        batch.append(writes.WriteEntry("POST", resource["resourceType"], resource=resource,
                                       full_url=e.get("fullUrl"), where=f"Bundle.entry[{i}]"))
    results = await writes.execute(store, ctx, batch, hooks=hooks)
    return next(r.id for r in results if r.resource_type == "Patient" and r.id)


def write_credentials(creds: dict[str, Any], path: Path) -> None:
    """Write the credentials file, readable by its owner only (it holds keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(creds, ensure_ascii=False, indent=2))
