"""The benchmark data generator produces valid, linked, deterministic FHIR data.

The benchmarks are only meaningful if the exchange accepts what they send, so
every generated resource must pass the same R4B validation the exchange uses.
"""

from __future__ import annotations

import statistics
from datetime import date

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from benchmarks.datagen import (
    RESIDENT_ID_SYSTEM,
    generate_big_patient,
    generate_bundles,
    is_valid_resident_id,
    iter_resources,
    resident_id_check_char,
)
from benchmarks.datagen.identity import REGIONS


@pytest.fixture(scope="module")
def bundles() -> list[dict]:
    return list(generate_bundles(seed=11, count=60))


@pytest.fixture(scope="module")
def big():
    return generate_big_patient(seed=5, resources=1000)


def _references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        for value in node.values():
            found += _references(value)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _references(item)]
    return []


def _patients(bundles: list[dict]) -> list[dict]:
    return [r for b in bundles for r in iter_resources(b) if r["resourceType"] == "Patient"]


def test_every_generated_resource_validates_with_r4b_models(bundles, big) -> None:
    sample = bundles[:25] + big.bundles[:4]
    for bundle in sample:
        get_fhir_model_class("Bundle").model_validate(bundle)
        for resource in iter_resources(bundle):
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_sample_covers_the_resource_types_the_benchmarks_search(bundles) -> None:
    types = {r["resourceType"] for b in bundles for r in iter_resources(b)}
    assert {"Patient", "Encounter", "Observation", "Condition", "MedicationRequest",
            "DiagnosticReport", "Procedure", "AllergyIntolerance",
            "Immunization"} <= types


def test_check_character_matches_the_published_example() -> None:
    assert resident_id_check_char("11010519491231002") == "X"
    assert is_valid_resident_id("11010519491231002X")
    assert not is_valid_resident_id("110105194912310021")  # wrong check character
    assert not is_valid_resident_id("11010519491331002X")  # month 13


def test_resident_ids_are_valid_and_agree_with_birth_date_and_sex(bundles) -> None:
    region_codes = {r.code for r in REGIONS}
    seen = 0
    for patient in _patients(bundles):
        rids = [i["value"] for i in patient["identifier"] if i["system"] == RESIDENT_ID_SYSTEM]
        if not rids:
            continue  # a foreign resident, identified by passport
        (rid,) = rids
        seen += 1
        assert is_valid_resident_id(rid), rid
        assert rid[:6] in region_codes
        assert date.fromisoformat(patient["birthDate"]) == date(
            int(rid[6:10]), int(rid[10:12]), int(rid[12:14]))
        assert (int(rid[16]) % 2 == 1) == (patient["gender"] == "male")
    assert seen >= 40


def test_chinese_names_carry_text_family_and_given(bundles) -> None:
    official = [p["name"][0] for p in _patients(bundles)]
    chinese = [n for n in official if not n["family"].isascii()]
    assert chinese
    for name in chinese:
        assert name["text"] == name["family"] + "".join(name["given"])


def test_bundles_are_transactions_linked_by_urn_uuid(bundles) -> None:
    for bundle in bundles:
        assert bundle["type"] == "transaction"
        urls = {e["fullUrl"] for e in bundle["entry"]}
        assert all(u.startswith("urn:uuid:") for u in urls)
        assert len(urls) == len(bundle["entry"])
        for ref in _references(bundle):
            assert ref in urls, ref
    assert 40 <= statistics.mean(len(b["entry"]) for b in bundles) <= 60


def test_patient_is_a_conditional_create_on_its_mrn(bundles) -> None:
    for bundle in bundles:
        first = bundle["entry"][0]
        assert first["resource"]["resourceType"] == "Patient"
        mrn = first["resource"]["identifier"][0]
        assert first["request"]["ifNoneExist"] == f"identifier={mrn['system']}|{mrn['value']}"
        # exactly one Patient per bundle
        assert sum(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"]) == 1


def test_observations_are_ucum_quantities_with_china_time_offsets(bundles) -> None:
    for r in (r for b in bundles for r in iter_resources(b)):
        if r["resourceType"] != "Observation":
            continue
        assert r["effectiveDateTime"].endswith("+08:00")
        assert r["category"][0]["coding"][0]["code"] in ("vital-signs", "laboratory")
        quantities = [r["valueQuantity"]] if "valueQuantity" in r else \
            [c["valueQuantity"] for c in r["component"]]
        for q in quantities:
            assert q["system"] == "http://unitsofmeasure.org" and q["code"]


def test_same_seed_gives_the_same_bundles_and_another_seed_does_not() -> None:
    first = orjson.dumps(list(generate_bundles(seed=3, count=5)))
    again = orjson.dumps(list(generate_bundles(seed=3, count=5)))
    other = orjson.dumps(list(generate_bundles(seed=4, count=5)))
    assert first == again
    assert first != other
    assert orjson.dumps(generate_big_patient(seed=2, resources=200).bundles) == \
        orjson.dumps(generate_big_patient(seed=2, resources=200).bundles)


def test_big_patient_has_about_a_thousand_resources_under_one_mrn(big) -> None:
    assert 950 <= big.resource_count <= 1100
    assert len(big.bundles) >= 15
    conditions = {b["entry"][0]["request"]["ifNoneExist"] for b in big.bundles}
    assert conditions == {f"identifier={big.mrn_system}|{big.mrn}"}
    assert big.resident_id is not None and is_valid_resident_id(big.resident_id)
