"""Contract: every condition kind and prefix of ``hie.store.query``."""

from __future__ import annotations

import pytest
from store.conftest import Records, day, ts

from hie.store.base import Store
from hie.store.index import DATE_MAX, DATE_MIN, IndexEntries
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Condition,
    DateMatch,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    SearchQuery,
    StringMatch,
    TokenMatch,
    UriMatch,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def where(rtype: str, *groups: tuple[Condition, ...]) -> SearchQuery:
    """A query: AND of the groups, OR inside each group."""
    return SearchQuery(rtype, tuple(AnyOf(g) for g in groups))


async def found(store: Store, records: Records, query: SearchQuery) -> set[str]:
    """Ids found by ``query``; also checks that ``count`` agrees."""
    ids = await records.ids(store, query, limit=1000)
    assert len(ids) == len(set(ids)), "a resource was returned twice"
    assert await store.count(query) == len(ids)
    return set(ids)


# ---- token ------------------------------------------------------------------

def codes(*values: tuple[str, str]) -> IndexEntries:
    return IndexEntries(token=[("code", system, code) for system, code in values])


@pytest.fixture
async def tokens(store: Store, records: Records) -> Store:
    await records.put(
        store,
        records.record("Observation", "loinc", index=codes((LOINC, "1234-5"))),
        records.record("Observation", "nosys", index=codes(("", "1234-5"))),
        records.record("Observation", "snomed", index=codes((SNOMED, "999"))),
        records.record("Observation", "none", index=codes()),
        records.record("Observation", "both", index=codes((LOINC, "1111-1"), (SNOMED, "999"))),
        records.record("Condition", "other-type", index=codes((LOINC, "1234-5"))),
    )
    return store


@pytest.mark.parametrize(("match", "expected"), [
    (TokenMatch("code", "1234-5"), {"loinc", "nosys"}),
    (TokenMatch("code", "1234-5", LOINC), {"loinc"}),
    (TokenMatch("code", "1234-5", ""), {"nosys"}),
    (TokenMatch("code", None, SNOMED), {"snomed", "both"}),
    (TokenMatch("code", None, None), {"loinc", "nosys", "snomed", "both"}),
    (TokenMatch("code", "1234-5", negate=True), {"snomed", "none", "both"}),
    (TokenMatch("code", "1234-5", LOINC, negate=True), {"nosys", "snomed", "none", "both"}),
    (TokenMatch("code", "999", negate=True), {"loinc", "nosys", "none"}),
    (TokenMatch("code", "unknown"), set()),
    (TokenMatch("other-param", "1234-5"), set()),
])
async def test_token(tokens: Store, records: Records, match: TokenMatch,
                     expected: set[str]) -> None:
    assert await found(tokens, records, where("Observation", (match,))) == expected


async def test_token_or_and(tokens: Store, records: Records) -> None:
    either = (TokenMatch("code", "1234-5", LOINC), TokenMatch("code", "999", SNOMED))
    assert await found(tokens, records, where("Observation", either)) == {
        "loinc", "snomed", "both"}
    both = where("Observation", (TokenMatch("code", "1111-1"),), (TokenMatch("code", "999"),))
    assert await found(tokens, records, both) == {"both"}
    mixed = where("Observation", (TokenMatch("code", "999"),),
                  (TokenMatch("code", "1111-1", negate=True),))
    assert await found(tokens, records, mixed) == {"snomed"}


# ---- string -----------------------------------------------------------------

@pytest.fixture
async def strings(store: Store, records: Records) -> Store:
    names = {"wang": ("wang", "Wang"), "wangfang": ("wangfang", "WangFang"),
             "li": ("li", "Li"), "zhang": ("zhang wei", "Zhang Wei"),
             "zhou": ("zhou", "周")}
    await records.put(store, *[
        records.record("Patient", rid, index=IndexEntries(string=[("name", norm, exact)]))
        for rid, (norm, exact) in names.items()])
    await records.create(store, "Patient", "noname")
    return store


@pytest.mark.parametrize(("match", "expected"), [
    (StringMatch("name", "wang"), {"wang", "wangfang"}),
    (StringMatch("name", "wangf"), {"wangfang"}),
    (StringMatch("name", "zhang w"), {"zhang"}),
    (StringMatch("name", "Wang"), set()),  # start compares the normalised form
    (StringMatch("name", "Wang", "exact"), {"wang"}),
    (StringMatch("name", "wang", "exact"), set()),
    (StringMatch("name", "周", "exact"), {"zhou"}),
    (StringMatch("name", "ang", "contains"), {"wang", "wangfang", "zhang"}),
    (StringMatch("name", "fang", "contains"), {"wangfang"}),
    (StringMatch("name", "x", "contains"), set()),
])
async def test_string(strings: Store, records: Records, match: StringMatch,
                      expected: set[str]) -> None:
    assert await found(strings, records, where("Patient", (match,))) == expected


# ---- date -------------------------------------------------------------------

@pytest.fixture
async def dates(store: Store, records: Records) -> Store:
    values = {
        "day": day("2024-01-10"),
        "month": ("2024-01-01T00:00:00.000000", "2024-01-31T23:59:59.999999"),
        "instant": ("2024-02-15T10:00:00.000000", "2024-02-15T10:00:00.000000"),
        "period": ("2023-12-31T00:00:00.000000", "2024-01-05T23:59:59.999999"),
        "open-end": ("2024-01-20T00:00:00.000000", DATE_MAX),
    }
    await records.put(store, *[
        records.record("Encounter", rid, index=IndexEntries(date=[("date", lo, hi)]))
        for rid, (lo, hi) in values.items()])
    await records.create(store, "Encounter", "undated")
    return store


JAN10 = day("2024-01-10")


@pytest.mark.parametrize(("prefix", "expected"), [
    ("eq", {"day"}),
    ("ne", {"month", "instant", "period", "open-end"}),
    ("gt", {"month", "instant", "open-end"}),
    ("lt", {"month", "period"}),
    ("ge", {"day", "month", "instant", "open-end"}),
    ("le", {"day", "month", "period"}),
    ("sa", {"instant", "open-end"}),
    ("eb", {"period"}),
])
async def test_date_prefixes_compare_ranges(dates: Store, records: Records, prefix: str,
                                            expected: set[str]) -> None:
    query = where("Encounter", (DateMatch("date", prefix, *JAN10),))
    assert await found(dates, records, query) == expected


async def test_date_ap_is_overlap_with_the_widened_range(dates: Store, records: Records) -> None:
    query = where("Encounter", (DateMatch("date", "ap", "2024-01-08T00:00:00.000000",
                                          "2024-01-12T23:59:59.999999"),))
    assert await found(dates, records, query) == {"day", "month"}


async def test_date_range_and_or(dates: Store, records: Records) -> None:
    window = where("Encounter", (DateMatch("date", "ge", *day("2024-01-06")),),
                   (DateMatch("date", "le", *day("2024-01-25")),))
    assert await found(dates, records, window) == {"day", "month", "open-end"}
    either = where("Encounter", (DateMatch("date", "eq", *JAN10),
                                 DateMatch("date", "eq", *day("2024-02-15"))))
    assert await found(dates, records, either) == {"day", "instant"}


async def test_date_eq_matches_a_value_within_a_partial_date(dates: Store,
                                                             records: Records) -> None:
    month = where("Encounter", (DateMatch("date", "eq", "2024-01-01T00:00:00.000000",
                                          "2024-01-31T23:59:59.999999"),))
    assert await found(dates, records, month) == {"day", "month"}
    everything = where("Encounter", (DateMatch("date", "eq", DATE_MIN, DATE_MAX),))
    assert len(await found(dates, records, everything)) == 5


# ---- number and quantity ----------------------------------------------------

def number_entry(value: float, precision: float = 0.05) -> tuple[float, float, float]:
    return value, value - precision, value + precision


@pytest.fixture
async def numbers(store: Store, records: Records) -> Store:
    values = {"n5": 5.0, "n54": 5.4, "n6": 6.0, "n100": 100.0, "nneg": -2.0}
    await records.put(store, *[
        records.record("RiskAssessment", rid,
                       index=IndexEntries(number=[("probability", *number_entry(v))]))
        for rid, v in values.items()])
    await records.create(store, "RiskAssessment", "nonumber")
    return store


@pytest.mark.parametrize(("prefix", "expected"), [
    ("eq", {"n54"}),
    ("ne", {"n5", "n6", "n100", "nneg"}),
    ("gt", {"n6", "n100"}),
    ("lt", {"n5", "nneg"}),
    ("ge", {"n54", "n6", "n100"}),
    ("le", {"n5", "n54", "nneg"}),
    ("sa", {"n6", "n100"}),
    ("eb", {"n5", "nneg"}),
    ("ap", {"n5", "n54"}),  # |v - 5.4| <= 0.54
])
async def test_number_prefixes(numbers: Store, records: Records, prefix: str,
                               expected: set[str]) -> None:
    query = where("RiskAssessment", (NumberMatch("probability", prefix, 5.4, 5.35, 5.45),))
    assert await found(numbers, records, query) == expected


async def test_number_eq_range_excludes_its_upper_bound(numbers: Store,
                                                        records: Records) -> None:
    # "5" means [4.5, 5.5): 5.0 and 5.4 match, 6.0 does not
    query = where("RiskAssessment", (NumberMatch("probability", "eq", 5.0, 4.5, 5.4),))
    assert await found(numbers, records, query) == {"n5"}
    query = where("RiskAssessment", (NumberMatch("probability", "eq", 5.0, 4.5, 5.5),))
    assert await found(numbers, records, query) == {"n5", "n54"}


@pytest.fixture
async def quantities(store: Store, records: Records) -> Store:
    def q(value: float, code: str, system: str = UCUM) -> IndexEntries:
        return IndexEntries(quantity=[("value-quantity", *number_entry(value), system, code)])

    await records.put(
        store,
        records.record("Observation", "mg54", index=q(5.4, "mg")),
        records.record("Observation", "g54", index=q(5.4, "g")),
        records.record("Observation", "mg54-local", index=q(5.4, "mg", "http://local")),
        records.record("Observation", "mg6", index=q(6.0, "mg")),
        records.record("Observation", "mg100", index=q(100.0, "mg")),
        records.record("Observation", "none", index=IndexEntries()),
    )
    return store


@pytest.mark.parametrize(("prefix", "system", "code", "expected"), [
    ("eq", None, None, {"mg54", "g54", "mg54-local"}),
    ("eq", None, "mg", {"mg54", "mg54-local"}),
    ("eq", UCUM, "mg", {"mg54"}),
    ("eq", UCUM, None, {"mg54", "g54"}),
    ("ne", UCUM, "mg", {"mg6", "mg100"}),
    ("gt", UCUM, "mg", {"mg6", "mg100"}),
    ("lt", UCUM, "mg", set()),
    ("ge", UCUM, "mg", {"mg54", "mg6", "mg100"}),
    ("le", None, None, {"mg54", "g54", "mg54-local"}),
    ("sa", None, "mg", {"mg6", "mg100"}),
    ("eb", None, "g", set()),
    ("ap", UCUM, "mg", {"mg54"}),
])
async def test_quantity(quantities: Store, records: Records, prefix: str, system: str | None,
                        code: str | None, expected: set[str]) -> None:
    match = QuantityMatch("value-quantity", prefix, 5.4, 5.35, 5.45, system, code)
    assert await found(quantities, records, where("Observation", (match,))) == expected


async def test_quantity_ap_uses_ten_percent(quantities: Store, records: Records) -> None:
    match = QuantityMatch("value-quantity", "ap", 95.0, 94.5, 95.5, UCUM, "mg")
    assert await found(quantities, records, where("Observation", (match,))) == {"mg100"}


# ---- reference and uri ------------------------------------------------------

@pytest.fixture
async def references(store: Store, records: Records) -> Store:
    def ref(*values: tuple[str, str, str]) -> IndexEntries:
        return IndexEntries(reference=list(values))

    await records.put(
        store,
        records.record("Observation", "p1", index=ref(("subject", "Patient", "1"))),
        records.record("Observation", "g1", index=ref(("subject", "Group", "1"))),
        records.record("Observation", "p2", index=ref(("subject", "Patient", "2"),
                                                      ("performer", "Practitioner", "9"))),
        records.record("Observation", "abs", index=ref(
            ("subject", "", "http://other.org/fhir/Patient/1"))),
        records.record("Observation", "perf1", index=ref(("performer", "Patient", "1"))),
    )
    return store


@pytest.mark.parametrize(("terms", "expected"), [
    ((ReferenceMatch("subject", "1", "Patient"),), {"p1"}),
    ((ReferenceMatch("subject", "1"),), {"p1", "g1"}),
    ((ReferenceMatch("subject", "http://other.org/fhir/Patient/1", ""),), {"abs"}),
    ((ReferenceMatch("subject", "1", "Patient"), ReferenceMatch("subject", "2", "Patient")),
     {"p1", "p2"}),
    ((ReferenceMatch("subject", "1", "Patient"), ReferenceMatch("performer", "1", "Patient")),
     {"p1", "perf1"}),
    ((ReferenceMatch("subject", "3", "Patient"),), set()),
])
async def test_reference(references: Store, records: Records,
                         terms: tuple[ReferenceMatch, ...], expected: set[str]) -> None:
    assert await found(references, records, where("Observation", terms)) == expected


async def test_reference_or_of_many_targets(references: Store, records: Records) -> None:
    """The shape ``_revinclude`` sends: one OR of hundreds of references."""
    terms = tuple(ReferenceMatch("subject", str(i), "Patient") for i in range(600))
    assert await found(references, records, where("Observation", terms)) == {"p1", "p2"}


@pytest.fixture
async def uris(store: Store, records: Records) -> Store:
    values = {"a": "http://x.org/fhir/ValueSet/a", "b": "http://x.org/fhir/ValueSet/b",
              "root": "http://x.org/fhir", "other": "http://y.org/fhir/ValueSet/a"}
    await records.put(store, *[
        records.record("ValueSet", rid, index=IndexEntries(uri=[("url", uri)]))
        for rid, uri in values.items()])
    return store


@pytest.mark.parametrize(("match", "expected"), [
    (UriMatch("url", "http://x.org/fhir/ValueSet/a"), {"a"}),
    (UriMatch("url", "http://x.org/fhir/ValueSet"), set()),
    (UriMatch("url", "http://x.org/fhir/ValueSet", "below"), {"a", "b"}),
    (UriMatch("url", "http://x.org/fhir", "below"), {"a", "b", "root"}),
    (UriMatch("url", "http://x.org/fhir/ValueSet/a", "above"), {"a", "root"}),
    (UriMatch("url", "http://x.org/fhir/CodeSystem/z", "above"), {"root"}),
])
async def test_uri(uris: Store, records: Records, match: UriMatch, expected: set[str]) -> None:
    assert await found(uris, records, where("ValueSet", (match,))) == expected


# ---- missing, _id, _lastUpdated ---------------------------------------------

@pytest.mark.parametrize(("kind", "entries"), [
    ("token", IndexEntries(token=[("p", "", "x")])),
    ("string", IndexEntries(string=[("p", "x", "X")])),
    ("date", IndexEntries(date=[("p", *day("2024-01-01"))])),
    ("number", IndexEntries(number=[("p", 1.0, 0.5, 1.5)])),
    ("quantity", IndexEntries(quantity=[("p", 1.0, 0.5, 1.5, UCUM, "mg")])),
    ("reference", IndexEntries(reference=[("p", "Patient", "1")])),
    ("uri", IndexEntries(uri=[("p", "http://x")])),
])
async def test_missing(store: Store, records: Records, kind: str,
                       entries: IndexEntries) -> None:
    await records.put(store, records.record("Basic", "has", index=entries),
                      records.record("Basic", "lacks",
                                     index=IndexEntries(token=[("other", "", "x")])))
    assert await found(store, records, where("Basic", (MissingMatch("p", kind, True),))) == {
        "lacks"}
    assert await found(store, records, where("Basic", (MissingMatch("p", kind, False),))) == {
        "has"}


async def test_id(store: Store, records: Records) -> None:
    await records.put(store, *[records.record("Patient", f"p{i}") for i in range(4)],
                      records.record("Observation", "p1"))
    assert await found(store, records, where("Patient", (IdMatch(("p1", "p3", "zz")),))) == {
        "p1", "p3"}
    assert await found(store, records, where("Patient", (IdMatch(("p1",)),),
                                             (IdMatch(("p2",)),))) == set()


async def test_last_updated(store: Store, records: Records) -> None:
    await records.put(store, *[records.record("Patient", f"t{s}", last_updated=ts(s))
                               for s in (10, 20, 30)])
    await records.put(store, records.record("Patient", "t10", version=2, last_updated=ts(40)))

    def lu(prefix: str, second: int) -> SearchQuery:
        return where("Patient", (LastUpdatedMatch(prefix, ts(second), ts(second)),))

    assert await found(store, records, lu("eq", 20)) == {"t20"}
    assert await found(store, records, lu("ne", 20)) == {"t10", "t30"}
    assert await found(store, records, lu("gt", 20)) == {"t30", "t10"}
    assert await found(store, records, lu("ge", 30)) == {"t30", "t10"}
    assert await found(store, records, lu("lt", 30)) == {"t20"}
    assert await found(store, records, lu("le", 30)) == {"t20", "t30"}
    assert await found(store, records, lu("sa", 20)) == {"t30", "t10"}
    assert await found(store, records, lu("eb", 30)) == {"t20"}
    assert await found(store, records, lu("eq", 10)) == set()  # t10 was updated at 40
    window = where("Patient", (LastUpdatedMatch("ap", ts(15), ts(35)),))
    assert await found(store, records, window) == {"t20", "t30"}


async def test_conditions_of_different_kinds_combine(store: Store, records: Records) -> None:
    def obs(code: str, patient: str, date: str) -> IndexEntries:
        return IndexEntries(token=[("code", LOINC, code)],
                            reference=[("subject", "Patient", patient)],
                            date=[("date", *day(date))])

    await records.put(
        store,
        records.record("Observation", "hit", index=obs("A", "1", "2024-03-01")),
        records.record("Observation", "other-code", index=obs("B", "1", "2024-03-01")),
        records.record("Observation", "other-patient", index=obs("A", "2", "2024-03-01")),
        records.record("Observation", "too-early", index=obs("A", "1", "2023-03-01")),
    )
    query = where("Observation", (TokenMatch("code", "A", LOINC),),
                  (ReferenceMatch("subject", "1", "Patient"),),
                  (DateMatch("date", "ge", *day("2024-01-01")),))
    assert await found(store, records, query) == {"hit"}
    assert await found(store, records, SearchQuery("Observation")) == {
        "hit", "other-code", "other-patient", "too-early"}


async def test_chain_to_id_and_with_other_conditions(store: Store, records: Records) -> None:
    def obs(patient: str, date: str) -> IndexEntries:
        return IndexEntries(reference=[("subject", "Patient", patient)],
                            date=[("date", *day(date))])

    await records.put(
        store,
        records.record("Patient", "1", index=IndexEntries(token=[("gender", "", "female")])),
        records.record("Patient", "2", index=IndexEntries(token=[("gender", "", "male")])),
        records.record("Observation", "p1-old", index=obs("1", "2023-01-01")),
        records.record("Observation", "p1-new", index=obs("1", "2024-01-01")),
        records.record("Observation", "p2-new", index=obs("2", "2024-01-01")),
        records.record("Observation", "ghost", index=obs("3", "2024-01-01")),
    )
    to_id = ChainMatch("subject", "Patient", IdMatch(("1", "3")))
    assert await found(store, records, where("Observation", (to_id,))) == {"p1-old", "p1-new"}
    female = ChainMatch("subject", "Patient", TokenMatch("gender", "female"))
    recent = DateMatch("date", "ge", *day("2024-01-01"))
    assert await found(store, records, where("Observation", (female,), (recent,))) == {"p1-new"}
    either = ChainMatch("subject", "Patient", TokenMatch("gender", "male"))
    assert await found(store, records, where("Observation", (female, either), (recent,))) == {
        "p1-new", "p2-new"}
    not_female = ChainMatch("subject", "Patient", TokenMatch("gender", "female", negate=True))
    assert await found(store, records, where("Observation", (not_female,))) == {"p2-new"}
