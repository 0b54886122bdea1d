"""ADT/ORU/A40 → FHIR; every mapped resource is validated with fhir.resources.R4B."""

from typing import Any

import hl7kit
import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapters.hl7v2.codes import CodeMaps
from adapters.hl7v2.fhirmap import fhir_datetime
from adapters.hl7v2.mapping import MappingSettings, map_message
from adapters.hl7v2.message import Hl7Error, parse

SETTINGS = MappingSettings(mrn_system="urn:oid:1.2.156.112604.1.2.1",
                           visit_system="urn:oid:1.2.156.112604.1.2.2")


def mapped(text: str, charset: str = "UNICODE UTF-8") -> Any:
    return map_message(parse(hl7kit.encode(text, charset)), SETTINGS)


def validate(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    get_fhir_model_class("Bundle").model_validate(bundle)
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)
        out.setdefault(res["resourceType"], []).append(entry)
    return out


@pytest.mark.parametrize("event", ["A01", "A04", "A08"])
def test_adt_maps_patient_and_encounter(event: str) -> None:
    out = mapped(hl7kit.adt(event))
    assert out.kind == "bundle" and out.patient_key == "urn:oid:1.2.156.112604.1.2.1|MRN12345"
    assert out.resource["type"] == "transaction"
    by_type = validate(out.resource)
    (p_entry,), (e_entry,) = by_type["Patient"], by_type["Encounter"]
    assert p_entry["request"] == {
        "method": "PUT",
        "url": "Patient?identifier=urn:oid:1.2.156.112604.1.2.1%7CMRN12345"}
    patient = p_entry["resource"]
    ids = {i["system"]: i["value"] for i in patient["identifier"]}
    assert ids == {"urn:oid:1.2.156.112604.1.2.1": "MRN12345",
                   "urn:oid:2.16.156.10011.1.1": hl7kit.ID_CARD}
    assert patient["name"][0]["text"] == "张三" and patient["name"][0]["use"] == "official"
    assert patient["name"][1]["family"] == "ZHANG" and patient["name"][1]["given"] == ["SAN"]
    assert patient["gender"] == "male" and patient["birthDate"] == "1949-12-31"
    phones = {(t["use"], t["value"]) for t in patient["telecom"]}
    assert phones == {("home", "010-12345678"), ("mobile", "13800138000"),
                      ("work", "010-87654321")}
    addr = patient["address"][0]
    assert addr["city"] == "北京市" and addr["district"] == "朝阳区" and addr["use"] == "home"
    enc = e_entry["resource"]
    assert e_entry["request"]["url"] == (
        "Encounter?identifier=urn:oid:1.2.156.112604.1.2.2%7CV20240501001")
    assert enc["class"]["code"] == "IMP" and enc["status"] == "in-progress"
    assert enc["period"] == {"start": "2024-05-01T08:00:00+08:00"}
    assert enc["subject"]["reference"] == p_entry["fullUrl"]
    assert enc["location"][0]["location"]["display"] == "心内科/301/2"
    assert enc["reasonCode"][0]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10", "code": "I10",
        "display": "Essential (primary) hypertension"}


def test_resend_yields_the_identical_bundle() -> None:
    assert mapped(hl7kit.adt()).payload == mapped(hl7kit.adt(control="OTHER")).payload


def test_gb18030_adt_keeps_chinese_name() -> None:
    out = mapped(hl7kit.adt(name="王億^明", charset="GB 18030-2000"), "GB 18030-2000")
    patient = validate(out.resource)["Patient"][0]["resource"]
    assert patient["name"][0]["text"] == "王億明"


def test_adt_without_visit_number_sends_only_the_patient() -> None:
    out = mapped(hl7kit.adt("A08", visit=""))
    assert [e["resource"]["resourceType"] for e in out.resource["entry"]] == ["Patient"]


def test_pid_without_resident_id_has_only_the_mrn() -> None:
    text = hl7kit.msh("ADT^A04^ADT_A01", "1") + "\rPID|1||555^^^H001^MR||LI^LEI||1980|F"
    patient = validate(mapped(text).resource)["Patient"][0]["resource"]
    assert [i["value"] for i in patient["identifier"]] == ["555"]
    assert patient["name"][0]["text"] == "LEI LI" and patient["birthDate"] == "1980"


def test_oru_maps_observations_and_report() -> None:
    out = mapped(hl7kit.oru())
    by_type = validate(out.resource)
    patient_entry = by_type["Patient"][0]
    assert patient_entry["request"]["method"] == "POST"
    assert patient_entry["request"]["ifNoneExist"].startswith("identifier=")
    obs = {e["resource"]["identifier"][0]["value"]: e["resource"] for e in by_type["Observation"]}
    glu = obs["F200.GLU"]
    assert glu["code"]["coding"][0] == {"system": "http://loinc.org", "code": "2345-7",
                                        "display": "Glucose [Mass/volume] in Serum or Plasma"}
    assert glu["valueQuantity"] == {"value": 7.8, "unit": "mmol/L",
                                    "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glu["referenceRange"][0]["low"]["value"] == 3.9
    assert glu["referenceRange"][0]["high"]["value"] == 6.1
    assert glu["interpretation"][0]["coding"][0]["code"] == "H"
    assert glu["status"] == "final" and glu["effectiveDateTime"] == "2024-05-01T08:00:00+08:00"
    assert glu["note"] == [{"text": "空腹 & 复查"}]
    assert obs["F200.CREA"]["valueQuantity"]["comparator"] == "<"
    assert obs["F200.CREA"]["valueQuantity"]["code"] == "umol/L"
    assert obs["F200.HBSAG"]["valueCodeableConcept"]["text"] == "阴性"
    assert obs["F200.BG-ABO"]["valueString"] == "A型 (Rh+)"
    assert obs["F200.K"]["effectiveDateTime"] == "2024-05-01T07:00:00+08:00"
    (report,) = by_type["DiagnosticReport"]
    assert report["request"]["url"] == (
        "DiagnosticReport?identifier=urn:hie:hospital:filler-order%7CF200")
    rep = report["resource"]
    assert rep["status"] == "final" and rep["code"]["coding"][0]["code"] == "51990-0"
    assert rep["issued"] == "2024-05-01T09:00:00+08:00"
    assert {r["reference"] for r in rep["result"]} == {
        e["fullUrl"] for e in by_type["Observation"]}


def test_sn_range_and_ratio_and_unmapped_code() -> None:
    extra = ["OBX|6|SN|TITER^滴度^LOCAL||^1^:^128||||||F",
             "OBX|7|SN|XYZ^本地项目^LOCAL||^10^-^20|g/L|||||P"]
    by_type = validate(mapped(hl7kit.oru(extra_obx=extra)).resource)
    obs = {e["resource"]["identifier"][0]["value"]: e["resource"] for e in by_type["Observation"]}
    assert obs["F200.TITER"]["valueRatio"]["denominator"]["value"] == 128
    xyz = obs["F200.XYZ"]
    assert xyz["valueRange"]["high"]["value"] == 20 and xyz["status"] == "preliminary"
    assert xyz["code"]["coding"] == [{"system": "urn:hie:hospital:local-code", "code": "XYZ",
                                      "display": "本地项目"}]


@pytest.mark.parametrize("obx,fragment", [
    ("OBX|6|NM|GLU^葡萄糖||高|mmol/L|||||F", "not a number"),
    ("OBX|6|ED|PDF^报告||x||||||F", "value type"),
    ("OBX|6|NM|GLU^葡萄糖||5|mmol/L||Q|||F", "abnormal flag"),
    ("OBX|6|NM|GLU^葡萄糖||5|mmol/L||||", "result status"),
    ("OBX|6|NM|GLU^葡萄糖||5|mmol/L|||||F|||2024-05-01", "date/time"),
])
def test_bad_obx_is_an_application_error(obx: str, fragment: str) -> None:
    with pytest.raises(Hl7Error) as err:
        mapped(hl7kit.oru(extra_obx=[obx]))
    assert fragment in err.value.text and err.value.ack_code == "AE"


def test_a40_maps_to_merge_parameters() -> None:
    out = mapped(hl7kit.a40())
    assert out.kind == "merge" and out.patient_key.endswith("|MRN12345")
    assert out.after == "urn:oid:1.2.156.112604.1.2.1|MRN99999"
    get_fhir_model_class("Parameters").model_validate(out.resource)
    assert out.resource["parameter"] == [
        {"name": "source-patient", "valueIdentifier": {
            "system": "urn:oid:1.2.156.112604.1.2.1", "value": "MRN99999"}},
        {"name": "target-patient", "valueIdentifier": {
            "system": "urn:oid:1.2.156.112604.1.2.1", "value": "MRN12345"}}]


@pytest.mark.parametrize("kind,ack", [("ADT^A03", "AR"), ("ORM^O01", "AR"), ("ORU^R30", "AR")])
def test_unknown_message_types_are_rejected(kind: str, ack: str) -> None:
    with pytest.raises(Hl7Error) as err:
        mapped(hl7kit.msh(kind, "1") + "\rPID|1||7^^^H^MR")
    assert err.value.ack_code == ack and err.value.code in ("200", "201")


def test_missing_pid_is_an_error() -> None:
    with pytest.raises(Hl7Error, match="PID segment missing"):
        mapped(hl7kit.msh("ADT^A01", "1") + "\rEVN|A01")


def test_hospital_map_folder_overrides_defaults(tmp_path, monkeypatch) -> None:
    (tmp_path / "loinc.csv").write_text("local_code,loinc,display\nglu,99999-9,本院葡萄糖\n",
                                        encoding="utf-8")
    monkeypatch.setenv("HIE_ADAPTER_HL7V2_MAPS", str(tmp_path))
    maps = CodeMaps.load()
    assert maps.lab("GLU").code == "99999-9"
    assert maps.ucum("10^9/L") == "10*9/L"  # units.csv falls back to the shipped table
    with pytest.raises(FileNotFoundError):
        CodeMaps.load(tmp_path / "missing")


def test_hl7_times_keep_their_offset_and_get_the_hospital_zone_otherwise() -> None:
    assert fhir_datetime("20240501083000+0100", "+08:00", "x") == "2024-05-01T08:30:00+01:00"
    assert fhir_datetime("202405010830", "+08:00", "x") == "2024-05-01T08:30:00+08:00"
    assert fhir_datetime("202405", "+08:00", "x") == "2024-05"
    with pytest.raises(Hl7Error):
        fhir_datetime("20240", "+08:00", "x")
