"""Index extraction: every value kind in the shapes ``hie.store.index`` fixes.

Each resource here is checked against the ``fhir.resources`` R4B model first, so
the tests index what a real write would index."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from hie.fhir.search.extract import extract, normalize_string, reference_values
from hie.store.index import DATE_MAX, DATE_MIN

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "urn:oid:1.2.156.112604.1.2.1"
RESIDENT_ID = "urn:oid:2.16.156.10011.1.1"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` after checking it is valid FHIR."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def rows(entries: list[tuple], param: str) -> set[tuple]:
    return {r[1:] for r in entries if r[0] == param}


def patient() -> dict[str, Any]:
    return valid({
        "resourceType": "Patient", "id": "p1", "active": True,
        "meta": {"versionId": "3", "lastUpdated": "2024-05-01T10:00:00Z",
                 "profile": ["http://example.org/StructureDefinition/cn-patient"],
                 "tag": [{"system": "http://example.org/tags", "code": "imported"}],
                 "security": [{"system": CONFIDENTIALITY, "code": "R"}]},
        "identifier": [{"system": MRN, "value": "MRN-0042"},
                       {"system": RESIDENT_ID, "value": "11010519491231002X"}],
        "name": [{"use": "official", "family": "王", "given": ["秀英"], "text": "王秀英"},
                 {"use": "usual", "family": "Wang", "given": ["Xiuying"],
                  "prefix": ["Mrs."]}],
        "telecom": [{"system": "phone", "value": "+86 138 0013 8000", "use": "mobile"},
                    {"system": "email", "value": "wang.xy@example.cn"}],
        "gender": "female", "birthDate": "1949-12",
        "address": [{"line": ["朝阳区建国路88号"], "city": "北京市", "district": "朝阳区",
                     "postalCode": "100022", "country": "CN"}],
        "generalPractitioner": [{"reference": "Practitioner/dr-li"}],
        "managingOrganization": {"reference": "Organization/hosp-1"},
        "link": [{"other": {"reference": "Patient/p0"}, "type": "replaces"}],
    })


def test_tokens_from_code_boolean_identifier_and_contact_points():
    e = extract(patient())
    assert rows(e.token, "gender") == {("", "female")}
    assert rows(e.token, "active") == {("", "true")}
    assert rows(e.token, "identifier") == {(MRN, "MRN-0042"), (RESIDENT_ID, "11010519491231002X")}
    assert rows(e.token, "phone") == {("phone", "+86 138 0013 8000")}
    assert rows(e.token, "email") == {("email", "wang.xy@example.cn")}
    assert rows(e.token, "telecom") == {("phone", "+86 138 0013 8000"),
                                        ("email", "wang.xy@example.cn")}


def test_names_and_addresses_index_every_part_folded_and_exact():
    e = extract(patient())
    assert rows(e.string, "family") == {("王", "王"), ("wang", "Wang")}
    assert rows(e.string, "given") == {("秀英", "秀英"), ("xiuying", "Xiuying")}
    assert rows(e.string, "name") == {("王", "王"), ("秀英", "秀英"), ("王秀英", "王秀英"),
                                      ("wang", "Wang"), ("xiuying", "Xiuying"),
                                      ("mrs.", "Mrs.")}
    assert rows(e.string, "address-city") == {("北京市", "北京市")}
    assert {"朝阳区建国路88号", "北京市", "朝阳区", "100022", "cn"} == \
        {n for n, _ in rows(e.string, "address")}


def test_normalisation_folds_case_and_accents_and_keeps_cjk():
    assert normalize_string("Zoë MÜLLER-Lüdenscheidt") == "zoe muller-ludenscheidt"
    assert normalize_string("Straße") == "strasse"
    assert normalize_string("ＡＢＣ１２３") == "abc123"  # full-width forms
    assert normalize_string("欧阳娜娜") == "欧阳娜娜"
    assert normalize_string("José") == normalize_string("JOSE")


def test_partial_birth_date_is_widened_to_its_month():
    e = extract(patient())
    assert rows(e.date, "birthdate") == {("1949-12-01T00:00:00.000000",
                                          "1949-12-31T23:59:59.999999")}


def test_references_and_meta():
    e = extract(patient())
    assert rows(e.reference, "general-practitioner") == {("Practitioner", "dr-li")}
    assert rows(e.reference, "organization") == {("Organization", "hosp-1")}
    assert rows(e.reference, "link") == {("Patient", "p0")}
    assert rows(e.token, "_tag") == {("http://example.org/tags", "imported")}
    assert rows(e.token, "_security") == {(CONFIDENTIALITY, "R")}
    assert rows(e.uri, "_profile") == {("http://example.org/StructureDefinition/cn-patient",)}


def test_id_and_last_updated_are_left_to_the_store():
    params = extract(patient()).params()
    assert "_id" not in params and "_lastUpdated" not in params


def observation(**extra: Any) -> dict[str, Any]:
    return valid({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose"},
                            {"system": "http://example.org/lab", "code": "GLU"}],
                 "text": "血糖"},
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "performer": [{"reference": "Practitioner/dr-li"}, {"reference": "Organization/lab"}],
        **extra,
    })


def test_codeable_concept_indexes_every_coding():
    e = extract(observation(valueQuantity={"value": 5.4, "unit": "mmol/L", "system": UCUM,
                                           "code": "mmol/L"},
                            effectiveDateTime="2024-03-01T08:30:00+08:00"))
    assert rows(e.token, "code") == {(LOINC, "2339-0"), ("http://example.org/lab", "GLU")}
    assert rows(e.token, "status") == {("", "final")}
    assert rows(e.reference, "performer") == {("Practitioner", "dr-li"), ("Organization", "lab")}
    assert rows(e.reference, "encounter") == {("Encounter", "e1")}


def test_quantity_keeps_its_precision_range_and_unit_code():
    e = extract(observation(valueQuantity={"value": 5.4, "unit": "mmol/L", "system": UCUM,
                                           "code": "mmol/L"}))
    [(value, low, high, system, code)] = rows(e.quantity, "value-quantity")
    assert (value, system, code) == (5.4, UCUM, "mmol/L")
    assert abs(low - 5.35) < 1e-9 and abs(high - 5.45) < 1e-9


def test_quantity_without_code_uses_its_unit():
    e = extract(observation(valueQuantity={"value": 120, "unit": "mg/dL"}))
    assert rows(e.quantity, "value-quantity") == {(120.0, 119.5, 120.5, "", "mg/dL")}


def test_date_time_with_zone_is_converted_to_utc_at_second_precision():
    e = extract(observation(effectiveDateTime="2024-03-01T08:30:00+08:00"))
    assert rows(e.date, "date") == {("2024-03-01T00:30:00.000000",
                                      "2024-03-01T00:30:00.999999")}


def test_date_time_crossing_midnight_and_fractional_seconds():
    e = extract(observation(effectiveDateTime="2024-01-01T02:15:30.25+08:00"))
    assert rows(e.date, "date") == {("2023-12-31T18:15:30.250000",
                                      "2023-12-31T18:15:30.259999")}


def test_date_time_in_utc_and_day_precision():
    assert rows(extract(observation(effectiveDateTime="2024-02-29T23:59:59Z")).date, "date") \
        == {("2024-02-29T23:59:59.000000", "2024-02-29T23:59:59.999999")}
    assert rows(extract(observation(effectiveDateTime="2024-02-29")).date, "date") \
        == {("2024-02-29T00:00:00.000000", "2024-02-29T23:59:59.999999")}
    assert rows(extract(observation(effectiveDateTime="2024")).date, "date") \
        == {("2024-01-01T00:00:00.000000", "2024-12-31T23:59:59.999999")}


def test_period_and_its_open_ends():
    closed = observation(effectivePeriod={"start": "2024-03-01T08:00:00+08:00",
                                          "end": "2024-03-02"})
    assert rows(extract(closed).date, "date") == {("2024-03-01T00:00:00.000000",
                                                   "2024-03-02T23:59:59.999999")}
    open_end = observation(effectivePeriod={"start": "2024-03-01"})
    assert rows(extract(open_end).date, "date") == {("2024-03-01T00:00:00.000000", DATE_MAX)}
    open_start = observation(effectivePeriod={"end": "2024-03-01"})
    assert rows(extract(open_start).date, "date") == {(DATE_MIN, "2024-03-01T23:59:59.999999")}


def test_instant_and_concept_values():
    e = extract(observation(issued="2024-03-01T09:00:00.123+08:00",
                            valueCodeableConcept={"coding": [{
                                "system": "http://snomed.info/sct", "code": "260385009"}]}))
    assert rows(e.token, "value-concept") == {("http://snomed.info/sct", "260385009")}
    assert rows(e.quantity, "value-quantity") == set()


def test_components_feed_combo_and_component_params():
    bp = observation(component=[
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 128, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "valueQuantity": {"value": 82, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    ])
    e = extract(bp)
    assert rows(e.token, "component-code") == {(LOINC, "8480-6"), (LOINC, "8462-4")}
    assert (LOINC, "2339-0") in rows(e.token, "combo-code")
    assert {v[0] for v in rows(e.quantity, "component-value-quantity")} == {128.0, 82.0}


def test_patient_param_only_takes_patient_subjects():
    e = extract(observation(subject={"reference": "Group/ward-3"}))
    assert rows(e.reference, "subject") == {("Group", "ward-3")}
    assert rows(e.reference, "patient") == set()


def test_absolute_reference_to_a_served_type_is_split():
    e = extract(observation(subject={"reference": "https://hie.example.cn/fhir/Patient/p1"}))
    assert rows(e.reference, "subject") == {("Patient", "p1")}
    assert rows(e.reference, "patient") == {("Patient", "p1")}


def test_other_references_keep_the_whole_reference():
    e = extract(observation(
        subject={"reference": "https://other.example.org/fhir/Location/ward-3"},
        performer=[{"reference": "urn:uuid:0b0b7d6e-0b4d-4d4b-9a55-2ee4e3a3c0f1"},
                   {"display": "Dr. Li, no reference"}],
        specimen={"reference": "Specimen/s1/_history/2"}))
    assert rows(e.reference, "subject") == {("", "https://other.example.org/fhir/Location/ward-3")}
    assert rows(e.reference, "performer") == {("", "urn:uuid:0b0b7d6e-0b4d-4d4b-9a55-2ee4e3a3c0f1")}
    assert rows(e.reference, "specimen") == {("Specimen", "s1")}


def test_contained_reference():
    e = extract(valid({
        "resourceType": "Observation", "status": "final",
        "contained": [{"resourceType": "Practitioner", "id": "c1"}],
        "code": {"text": "note"}, "performer": [{"reference": "#c1"}]}))
    assert rows(e.reference, "performer") == {("", "#c1")}


def test_repeated_values_are_indexed_once():
    e = extract(observation(category=[
        {"coding": [{"system": "http://example.org/c", "code": "lab"}]},
        {"coding": [{"system": "http://example.org/c", "code": "lab"}]}]))
    assert [r for r in e.token if r[0] == "category"] == [("category", "http://example.org/c",
                                                           "lab")]


def test_malformed_values_are_skipped_not_raised():
    resource = observation()
    resource["effectiveDateTime"] = "yesterday"  # validation would refuse; index must not crash
    resource["valueQuantity"] = {"value": "many"}
    e = extract(resource)
    assert rows(e.date, "date") == set()
    assert rows(e.quantity, "value-quantity") == set()


def test_condition_onset_choice_types_go_to_their_own_params():
    e = extract(valid({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
        "subject": {"reference": "Patient/p1"}, "onsetString": "2019年春天",
        "recordedDate": "2020-05-01"}))
    assert rows(e.string, "onset-info") == {("2019年春天", "2019年春天")}
    assert rows(e.date, "onset-date") == set()
    assert rows(e.date, "recorded-date") == {("2020-05-01T00:00:00.000000",
                                              "2020-05-01T23:59:59.999999")}
    assert rows(e.token, "clinical-status") == {(
        "http://terminology.hl7.org/CodeSystem/condition-clinical", "active")}


def test_encounter_class_coding_and_period():
    e = extract(valid({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": ACT_CODE, "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "participant": [{"individual": {"reference": "Practitioner/dr-li"}}],
        "serviceProvider": {"reference": "Organization/hosp-1"},
        "period": {"start": "2024-03-01T08:00:00+08:00", "end": "2024-03-05T10:00:00+08:00"}}))
    assert rows(e.token, "class") == {(ACT_CODE, "IMP")}
    assert rows(e.date, "date") == {("2024-03-01T00:00:00.000000", "2024-03-05T02:00:00.999999")}
    assert rows(e.reference, "practitioner") == {("Practitioner", "dr-li")}
    assert rows(e.reference, "participant") == {("Practitioner", "dr-li")}
    assert rows(e.reference, "service-provider") == {("Organization", "hosp-1")}


def test_medication_request_timing_events_and_code():
    e = extract(valid({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{
            "system": "http://www.whocc.no/atc", "code": "A10BA02"}]},
        "subject": {"reference": "Patient/p1"}, "authoredOn": "2024-03-01",
        "dosageInstruction": [{"timing": {"event": ["2024-03-02T08:00:00+08:00",
                                                    "2024-03-02T20:00:00+08:00"]}}]}))
    assert rows(e.token, "code") == {("http://www.whocc.no/atc", "A10BA02")}
    assert rows(e.date, "date") == {
        ("2024-03-02T00:00:00.000000", "2024-03-02T00:00:00.999999"),
        ("2024-03-02T12:00:00.000000", "2024-03-02T12:00:00.999999")}
    assert rows(e.reference, "patient") == {("Patient", "p1")}


def test_imaging_study_ids_and_endpoints():
    e = extract(valid({
        "resourceType": "ImagingStudy", "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.113619.2.55.3"}],
        "subject": {"reference": "Patient/p1"}, "started": "2024-03-01T09:10:00+08:00",
        "endpoint": [{"reference": "Endpoint/pacs-1"}],
        "series": [{"uid": "1.2.840.113619.2.55.3.1", "number": 1,
                    "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                 "code": "CT"},
                    "bodySite": {"system": "http://snomed.info/sct", "code": "51185008"},
                    "instance": [{"uid": "1.2.840.113619.2.55.3.1.1",
                                  "sopClass": {"system": "urn:ietf:rfc:3986",
                                               "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}]}],
    }))
    assert rows(e.token, "identifier") == {("urn:dicom:uid", "urn:oid:1.2.840.113619.2.55.3")}
    assert rows(e.token, "series") == {("", "1.2.840.113619.2.55.3.1")}
    assert rows(e.token, "instance") == {("", "1.2.840.113619.2.55.3.1.1")}
    assert rows(e.token, "modality") == {("http://dicom.nema.org/resources/ontology/DCM", "CT")}
    assert rows(e.reference, "endpoint") == {("Endpoint", "pacs-1")}
    assert rows(e.date, "started") == {("2024-03-01T01:10:00.000000",
                                        "2024-03-01T01:10:00.999999")}


def test_document_reference_uri_and_context():
    e = extract(valid({
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"},
        "type": {"coding": [{"system": LOINC, "code": "18842-5"}]},
        "subject": {"reference": "Patient/p1"}, "date": "2024-03-05T10:00:00+08:00",
        "author": [{"reference": "Practitioner/dr-li"}],
        "content": [{"attachment": {"contentType": "application/pdf",
                                    "url": "https://hosp-1.example.cn/docs/ds-1.pdf"}}],
        "context": {"encounter": [{"reference": "Encounter/e1"}],
                    "period": {"start": "2024-03-01", "end": "2024-03-05"}}}))
    assert rows(e.uri, "location") == {("https://hosp-1.example.cn/docs/ds-1.pdf",)}
    assert rows(e.token, "identifier") == {("urn:ietf:rfc:3986", "urn:oid:1.2.3.4")}
    assert rows(e.token, "contenttype") == {("", "application/pdf")}
    assert rows(e.reference, "encounter") == {("Encounter", "e1")}
    assert rows(e.date, "period") == {("2024-03-01T00:00:00.000000",
                                       "2024-03-05T23:59:59.999999")}


def test_consent_provision_values():
    e = extract(valid({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"}, "dateTime": "2024-01-10T09:00:00+08:00",
        "organization": [{"reference": "Organization/hosp-1"}],
        "sourceReference": {"reference": "DocumentReference/signed-form"},
        "provision": {"type": "permit", "period": {"start": "2024-01-10", "end": "2025-01-09"},
                      "actor": [{"role": {"text": "recipient"},
                                 "reference": {"reference": "Organization/hosp-2"}}],
                      "action": [{"coding": [{
                          "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                          "code": "access"}]}]}}))
    assert rows(e.reference, "actor") == {("Organization", "hosp-2")}
    assert rows(e.reference, "source-reference") == {("DocumentReference", "signed-form")}
    assert rows(e.token, "action") == {(
        "http://terminology.hl7.org/CodeSystem/consentaction", "access")}
    assert rows(e.date, "period") == {("2024-01-10T00:00:00.000000",
                                       "2025-01-09T23:59:59.999999")}


def test_unknown_resource_type_has_no_index():
    assert extract({"resourceType": "Basic", "code": {"text": "x"}}).params() == set()


def test_reference_values_for_include():
    obs = observation(performer=[{"reference": "Practitioner/dr-li"},
                                 {"reference": "Practitioner/dr-li"}])
    assert reference_values(obs, "performer") == [("Practitioner", "dr-li")]
    assert reference_values(obs, "patient") == [("Patient", "p1")]
    assert reference_values(obs, "code") == []
    assert reference_values(obs, "no-such-param") == []
