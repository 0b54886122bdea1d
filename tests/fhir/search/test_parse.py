"""Search parsing: FHIR R4 search parameters → the store's query language."""

from __future__ import annotations

import pytest

from hie.fhir.search.parse import Include, SearchError, parse_search
from hie.store.query import (
    AnyOf,
    ChainMatch,
    DateMatch,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    SortKey,
    StringMatch,
    TokenMatch,
    UriMatch,
)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BASE = "https://hie.example.cn/fhir"


def where(rtype: str, *params: tuple[str, str], **kw) -> tuple[AnyOf, ...]:
    return parse_search(rtype, list(params), **kw).query.where


def one(rtype: str, name: str, value: str, **kw):
    """The single condition ``name=value`` parses to."""
    [any_of] = where(rtype, (name, value), **kw)
    [term] = any_of.terms
    return term


def error(rtype: str, *params: tuple[str, str], **kw) -> SearchError:
    with pytest.raises(SearchError) as info:
        parse_search(rtype, list(params), **kw)
    return info.value


# -- dates --------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb"])
def test_date_prefixes_carry_the_search_value_range(prefix: str):
    assert one("Observation", "date", f"{prefix}2024-03") == DateMatch(
        "date", prefix, "2024-03-01T00:00:00.000000", "2024-03-31T23:59:59.999999")


def test_date_without_prefix_is_eq_at_its_precision():
    assert one("Encounter", "date", "2024-03-01") == DateMatch(
        "date", "eq", "2024-03-01T00:00:00.000000", "2024-03-01T23:59:59.999999")


def test_date_with_time_zone_is_compared_in_utc():
    assert one("Observation", "date", "ge2024-03-01T08:00:00+08:00") == DateMatch(
        "date", "ge", "2024-03-01T00:00:00.000000", "2024-03-01T00:00:00.999999")


def test_date_ap_is_widened_here_and_sent_as_ap():
    term = one("Observation", "date", "ap2024-03-01")
    assert term.prefix == "ap"
    assert term.low <= "2024-02-29T00:00:00.000000"
    assert term.high >= "2024-03-02T23:59:59.999999"


def test_a_date_range_by_two_parameters_is_an_and():
    assert where("Observation", ("date", "ge2024-01-01"), ("date", "lt2024-04-01")) == (
        AnyOf((DateMatch("date", "ge", "2024-01-01T00:00:00.000000",
                         "2024-01-01T23:59:59.999999"),)),
        AnyOf((DateMatch("date", "lt", "2024-04-01T00:00:00.000000",
                         "2024-04-01T23:59:59.999999"),)))


@pytest.mark.parametrize("value", ["2024-13", "gt", "yesterday", "xx2024", "2024-03-01T10"])
def test_bad_date_names_the_parameter(value: str):
    assert error("Observation", ("date", value)).param == "date"


# -- numbers and quantities ---------------------------------------------------

@pytest.mark.parametrize("prefix", ["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"])
def test_quantity_prefixes(prefix: str):
    term = one("Observation", "value-quantity", f"{prefix}5.4|{UCUM}|mmol/L")
    assert isinstance(term, QuantityMatch)
    assert (term.prefix, term.value, term.system, term.code) == (prefix, 5.4, UCUM, "mmol/L")
    assert term.low == pytest.approx(5.35) and term.high == pytest.approx(5.45)


def test_quantity_forms():
    assert one("Observation", "value-quantity", "5.4") == QuantityMatch(
        "value-quantity", "eq", 5.4, pytest.approx(5.35), pytest.approx(5.45))
    term = one("Observation", "value-quantity", "le100||mg")
    assert (term.prefix, term.value, term.system, term.code) == ("le", 100, None, "mg")
    assert (term.low, term.high) == (99.5, 100.5)


@pytest.mark.parametrize("value", ["abc", "5.4|mg", "gt", "5.4|a|b|c"])
def test_bad_quantity(value: str):
    assert error("Observation", ("value-quantity", value)).param == "value-quantity"


def test_number_params_use_the_same_prefix_rules():
    from hie.fhir.search.conditions import term
    from schemas.search_parameters import SearchParam

    length = SearchParam("length", "number", ("Encounter.length.value",))
    assert term("length", length, None, "gt5.4", None) == NumberMatch(
        "length", "gt", 5.4, pytest.approx(5.35), pytest.approx(5.45))
    with pytest.raises(SearchError):
        term("length", length, None, "five", None)


# -- tokens -------------------------------------------------------------------

def test_token_forms():
    assert one("Observation", "code", "8480-6") == TokenMatch("code", "8480-6", None)
    assert one("Observation", "code", f"{LOINC}|8480-6") == TokenMatch("code", "8480-6", LOINC)
    assert one("Observation", "code", "|8480-6") == TokenMatch("code", "8480-6", "")
    assert one("Observation", "code", f"{LOINC}|") == TokenMatch("code", None, LOINC)
    assert error("Observation", ("code", "|")).param == "code"


def test_token_escapes():
    assert one("Patient", "identifier", r"urn:x|a\|b") == TokenMatch("identifier", "a|b", "urn:x")
    assert one("Patient", "identifier", r"a\,b") == TokenMatch("identifier", "a,b", None)


def test_comma_is_or_and_repetition_is_and():
    assert where("Observation", ("code", f"{LOINC}|8480-6,{LOINC}|8462-4"),
                 ("status", "final")) == (
        AnyOf((TokenMatch("code", "8480-6", LOINC), TokenMatch("code", "8462-4", LOINC))),
        AnyOf((TokenMatch("status", "final"),)))


def test_not_negates_each_value():
    assert where("Observation", ("status:not", "cancelled,entered-in-error")) == (
        AnyOf((TokenMatch("status", "cancelled", None, negate=True),)),
        AnyOf((TokenMatch("status", "entered-in-error", None, negate=True),)))


def test_booleans_and_meta_tokens():
    assert one("Patient", "active", "true") == TokenMatch("active", "true")
    assert one("Observation", "_security",
               "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R") == TokenMatch(
        "_security", "R", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality")


def test_prefix_letters_on_tokens_are_part_of_the_value():
    # A UUID id or a code may well start with "eb" or "ge": prefixes only apply
    # to dates, numbers and quantities (FHIR R4 §3.1.1.4.1).
    assert one("Observation", "identifier", "eb12") == TokenMatch("identifier", "eb12")


# -- strings ------------------------------------------------------------------

def test_string_modes():
    assert one("Patient", "family", "Müller") == StringMatch("family", "muller", "start")
    assert one("Patient", "family:exact", "Müller") == StringMatch("family", "Müller", "exact")
    assert one("Patient", "name:contains", "秀") == StringMatch("name", "秀", "contains")
    assert one("Patient", "address-city", "北京") == StringMatch("address-city", "北京")


@pytest.mark.parametrize("modifier", ["not", "below", "text", "Patient", "in"])
def test_bad_string_modifier(modifier: str):
    assert error("Patient", (f"name:{modifier}", "x")).param == f"name:{modifier}"


# -- missing ------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [("name", "string"), ("birthdate", "date"),
                                        ("identifier", "token"), ("organization", "reference"),
                                        ("_profile", "uri")])
def test_missing_on_every_type(name: str, kind: str):
    assert one("Patient", f"{name}:missing", "true") == MissingMatch(name, kind, True)
    assert one("Patient", f"{name}:missing", "false") == MissingMatch(name, kind, False)


def test_missing_takes_only_booleans():
    assert error("Patient", ("gender:missing", "yes")).param == "gender:missing"


# -- uri ----------------------------------------------------------------------

def test_uri_modes():
    url = "https://hosp-1.example.cn/docs/"
    assert one("DocumentReference", "location", url) == UriMatch("location", url)
    assert one("DocumentReference", "location:below", url) == UriMatch("location", url, "below")
    assert one("Patient", "_profile:above", url) == UriMatch("_profile", url, "above")
    assert error("DocumentReference", ("location:exact", url)).param == "location:exact"


# -- references ---------------------------------------------------------------

def test_reference_forms():
    assert one("Observation", "subject", "Patient/123") == ReferenceMatch("subject", "123",
                                                                          "Patient")
    assert one("Observation", "subject", "123") == ReferenceMatch("subject", "123", None)
    assert one("Observation", "patient", "123") == ReferenceMatch("patient", "123", "Patient")
    assert one("Observation", "subject:Patient", "123") == ReferenceMatch("subject", "123",
                                                                          "Patient")
    assert one("Observation", "subject:Group", "Group/g1") == ReferenceMatch("subject", "g1",
                                                                             "Group")


def test_absolute_references():
    assert one("Observation", "subject", f"{BASE}/Patient/123", base=BASE) == \
        ReferenceMatch("subject", "123", "Patient")
    # without a base the served type in the URL is enough, as in the index
    assert one("Observation", "subject", "https://elsewhere.cn/fhir/Patient/9") == \
        ReferenceMatch("subject", "9", "Patient")
    other = "https://other.example.org/fhir/Location/1"
    assert one("Observation", "subject", other) == ReferenceMatch("subject", other, "")
    assert one("Observation", "performer", "urn:uuid:0b0b7d6e") == ReferenceMatch(
        "performer", "urn:uuid:0b0b7d6e", "")


def test_reference_type_errors():
    assert error("Observation", ("subject:Group", "Patient/1")).param == "subject:Group"
    assert error("Observation", ("patient", "Group/1")).param == "patient"
    assert error("Observation", ("subject:Medication", "1")).param == "subject:Medication"
    assert error("Observation", ("subject:exact", "1")).param == "subject:exact"
    assert error("Observation", ("subject:Patient:x", "1")).param == "subject:Patient:x"


# -- _id and _lastUpdated -----------------------------------------------------

def test_id_and_last_updated():
    assert one("Patient", "_id", "a1,b-2") == IdMatch(("a1", "b-2"))
    assert error("Patient", ("_id", "a b")).param == "_id"
    assert where("Patient", ("_lastUpdated", "gt2024-03-01,lt2020")) == (AnyOf((
        LastUpdatedMatch("gt", "2024-03-01T00:00:00.000000", "2024-03-01T23:59:59.999999"),
        LastUpdatedMatch("lt", "2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999"))),)
    assert error("Patient", ("_lastUpdated", "gtnow")).param == "_lastUpdated"


# -- chaining -----------------------------------------------------------------

def test_chain_with_type():
    assert one("Observation", "subject:Patient.identifier", "urn:oid:1.2|MRN-1") == ChainMatch(
        "subject", "Patient", TokenMatch("identifier", "MRN-1", "urn:oid:1.2"))


def test_chain_on_a_single_target_parameter_needs_no_type():
    assert where("Observation", ("patient.name", "王,Li")) == (AnyOf((
        ChainMatch("patient", "Patient", StringMatch("name", "王")),
        ChainMatch("patient", "Patient", StringMatch("name", "li")))),)
    assert one("Encounter", "service-provider._id", "hosp-1") == ChainMatch(
        "service-provider", "Organization", IdMatch(("hosp-1",)))


def test_chain_errors():
    assert "Type" in str(error("Observation", ("subject.name", "x")))
    assert error("Observation", ("subject:Patient.organization.name", "x")).param \
        == "subject:Patient.organization.name"
    assert error("Observation", ("code.name", "x")).param == "code.name"
    assert error("Observation", ("subject:Device.name", "x")).param == "subject:Device.name"
    assert error("Observation", ("patient.birthdate", "soon")).param == "patient.birthdate"


def test_unknown_chained_parameter_follows_the_unknown_rule():
    assert parse_search("Observation", [("patient.shoe-size", "42")]).used == []
    assert error("Observation", ("patient.shoe-size", "42"), strict=True).param \
        == "patient.shoe-size"


# -- result parameters --------------------------------------------------------

def test_count_summary_total_elements():
    p = parse_search("Observation", [("_count", "0"), ("_summary", "count"), ("_total", "accurate"),
                                     ("_elements", "code, Observation.subject,valueQuantity")])
    assert (p.count, p.summary, p.total) == (0, "count", "accurate")
    assert p.elements == ["code", "subject", "valueQuantity"]


@pytest.mark.parametrize("name, value", [
    ("_count", "-1"), ("_count", "ten"), ("_count", "1e3"), ("_summary", "all"),
    ("_total", "exact"), ("_elements", "code,$where"), ("_elements", "a..b"),
])
def test_bad_result_parameters(name: str, value: str):
    assert error("Observation", (name, value)).param == name


def test_sort_keys():
    p = parse_search("Observation", [("_sort", "-date,code"), ("_sort", "_lastUpdated,-_id")])
    assert p.query.sort == (SortKey("date", "date", True), SortKey("code", "token"),
                            SortKey("_lastUpdated", "date"), SortKey("_id", "token", True))


@pytest.mark.parametrize("value", ["shoe-size", "-", "date,,code"])
def test_bad_sort(value: str):
    assert error("Observation", ("_sort", value)).param == "_sort"


def test_include_and_revinclude():
    p = parse_search("Observation", [("_include", "Observation:patient"),
                                     ("_include", "Observation:performer:Practitioner"),
                                     ("_revinclude", "Provenance:target"),
                                     ("_revinclude", "DiagnosticReport:result:Observation")])
    assert p.includes == [Include("Observation", "patient", None),
                          Include("Observation", "performer", "Practitioner")]
    assert p.revincludes == [Include("Provenance", "target", None),
                             Include("DiagnosticReport", "result", "Observation")]


@pytest.mark.parametrize("name, value", [
    ("_include", "Encounter:patient"),          # source is not the searched type
    ("_include", "Observation:code"),           # not a reference
    ("_include", "Observation:patient:Group"),  # target not allowed
    ("_include", "Observation"),
    ("_include", "*"),
    ("_include", "Observation:patient:Patient:x"),
    ("_revinclude", "DiagnosticReport:result"),     # result cannot refer to a Patient
    ("_revinclude", "Observation:subject:Group"),   # the target must be the searched type
    ("_revinclude", "Basic:subject"),
    ("_revinclude", "Observation:no-such"),
])
def test_bad_includes(name: str, value: str):
    searched = "Observation" if name == "_include" else "Patient"
    assert error(searched, (name, value)).param == name


# -- used, unknown and ignored parameters -------------------------------------

def test_used_keeps_applied_parameters_in_order():
    params = [("_format", "json"), ("status", "final"), ("shoe-size", "42"), ("_count", "10"),
              ("_pretty", "true"), ("patient", "Patient/1"), ("_sort", "-date"),
              ("_include", "Observation:patient"), ("_summary", "true"), ("_elements", "code"),
              ("_total", "none"), ("_id", "o1"), ("_lastUpdated", "ge2024")]
    assert parse_search("Observation", params).used == [
        ("status", "final"), ("_count", "10"), ("patient", "Patient/1"), ("_sort", "-date"),
        ("_include", "Observation:patient"), ("_summary", "true"), ("_elements", "code"),
        ("_total", "none"), ("_id", "o1"), ("_lastUpdated", "ge2024")]


def test_unknown_parameters_are_ignored_unless_strict():
    lenient = parse_search("Patient", [("shoe-size", "42"), ("_has:Observation:patient:code",
                                                            "x"), ("gender", "male")])
    assert lenient.query.where == (AnyOf((TokenMatch("gender", "male"),)),)
    assert lenient.used == [("gender", "male")]
    assert error("Patient", ("shoe-size", "42"), strict=True).param == "shoe-size"


def test_empty_values_are_ignored_unless_strict():
    assert parse_search("Patient", [("gender", "")]).query.where == ()
    assert error("Patient", ("gender", ""), strict=True).param == "gender"
    assert error("Patient", ("gender", "male,")).param == "gender"


@pytest.mark.parametrize("name, value", [
    ("$where", "1"), ("name[$ne]", "x"), ("family[]", "x"), ("{}", "x"),
    ("name", '{"$ne": null}'), ("shoe-size", ' {"$gt": ""}'), ("_count", "{}"),
])
@pytest.mark.parametrize("strict", [False, True])
def test_smuggled_operators_are_always_refused(name: str, value: str, strict: bool):
    assert error("Patient", (name, value), strict=strict).param == name


def test_work_is_bounded():
    assert error("Patient", *[("gender", "male")] * 101).param is None
    parse_search("Patient", [("gender", "male")] * 100)
    assert error("Patient", ("_id", ",".join(f"p{i}" for i in range(101)))).param == "_id"
    assert len(one("Patient", "_id", ",".join(f"p{i}" for i in range(100))).ids) == 100


def test_unknown_resource_type():
    with pytest.raises(SearchError):
        parse_search("Basic", [])


def test_parsed_query_names_the_type_and_leaves_restriction_to_the_caller():
    q = parse_search("Condition", [("code", "I10")]).query
    assert q.resource_type == "Condition" and q.restriction is None
