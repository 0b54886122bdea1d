"""SQLite: every supported search is answered from indexes.

Runs ``EXPLAIN QUERY PLAN`` on exactly the SQL the store executes (from
:func:`compile_search` / :func:`compile_count`) for each query kind and fails
on any ``SCAN`` — SQLite's word for reading a whole table or a whole index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from hie.store.index import DATE_MAX, DATE_MIN
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Condition,
    Cursor,
    DateMatch,
    Grant,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    StringMatch,
    TokenMatch,
    UriMatch,
)
from hie.store.sqlite import SQLiteStore, compile_count, compile_search
from hie.store.sqlite.compile import Driver, compile_probes
from hie.store.sqlite.planner import PROBE_CAP
from hie.store.sqlite.records import (
    history_statements,
    read_many_sql,
    read_many_statement,
    read_statement,
    read_version_statement,
)

RESTRICTED = Restriction(sources=frozenset({"org-a", "org-b"}),
                         hidden_labels=frozenset({"HIV", "PSY"}))
#: A doctor at org-a with a consent for one person (two linked Patients) and a
#: break-the-glass grant limited to some types.
GRANTED = Restriction(sources=frozenset({"org-a"}), grants=(
    Grant(patients=frozenset({"p1", "p2"}), sources=frozenset({"org-b", "org-c"}),
          params=frozenset({"subject", "patient"}), hidden_labels=frozenset({"HIV", "PSY"})),
    Grant(patients=frozenset({"p3"}), sources=frozenset({"org-b"}),
          params=frozenset({"subject"}), types=frozenset({"Observation", "Patient"})),
))
GRANTS_ONLY = Restriction(sources=frozenset(), grants=GRANTED.grants)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def q(rtype: str, *conditions: Condition, sort: tuple[SortKey, ...] = (),
      restriction: Restriction | None = None) -> SearchQuery:
    return SearchQuery(rtype, tuple(AnyOf((c,)) for c in conditions), sort, restriction)


def cases() -> Iterator[tuple[str, SearchQuery]]:
    yield "type only", q("Observation")
    yield "token code", q("Observation", TokenMatch("code", "1234-5"))
    yield "token system|code", q("Observation", TokenMatch("code", "1234-5", "http://loinc.org"))
    yield "token |code", q("Observation", TokenMatch("code", "1234-5", ""))
    yield "token system|", q("Observation", TokenMatch("code", None, "http://loinc.org"))
    yield "token :not", q("Observation", TokenMatch("code", "1234-5", negate=True))
    yield "token OR", SearchQuery("Observation", (AnyOf((
        TokenMatch("code", "a", "s"), TokenMatch("code", "b", "s"), TokenMatch("code", "c"))),))
    for mode in ("start", "exact", "contains"):
        yield f"string {mode}", q("Patient", StringMatch("name", "wang", mode))
    for prefix in PREFIXES:
        yield f"date {prefix}", q("Encounter", DateMatch("date", prefix, DATE_MIN, DATE_MAX))
        yield f"number {prefix}", q("RiskAssessment", NumberMatch("probability", prefix,
                                                                  5.4, 5.35, 5.45))
        yield f"quantity {prefix}", q("Observation", QuantityMatch(
            "value-quantity", prefix, 5.4, 5.35, 5.45, "http://unitsofmeasure.org", "mg"))
        yield f"quantity {prefix} any unit", q("Observation", QuantityMatch(
            "value-quantity", prefix, 5.4, 5.35, 5.45))
        yield f"_lastUpdated {prefix}", q("Patient", LastUpdatedMatch(prefix, DATE_MIN,
                                                                      DATE_MAX))
    yield "reference typed", q("Observation", ReferenceMatch("subject", "1", "Patient"))
    yield "reference any type", q("Observation", ReferenceMatch("subject", "1"))
    yield "reference absolute", q("Observation", ReferenceMatch("subject", "http://x/P/1", ""))
    yield "revinclude-style reference OR", SearchQuery("Observation", (AnyOf(tuple(
        ReferenceMatch("subject", str(i), "Patient") for i in range(300))),),
        restriction=RESTRICTED)
    for mode in ("exact", "below", "above"):
        yield f"uri {mode}", q("ValueSet", UriMatch("url", "http://x.org/fhir/ValueSet/a", mode))
    for kind in ("token", "string", "date", "number", "quantity", "reference", "uri"):
        yield f"missing {kind}", q("Observation", MissingMatch("p", kind, True))
        yield f"present {kind}", q("Observation", MissingMatch("p", kind, False))
    yield "_id", q("Patient", IdMatch(("a", "b", "c")))
    yield "chain", q("Observation", ChainMatch(
        "subject", "Patient", TokenMatch("identifier", "110", "urn:id")), restriction=RESTRICTED)
    yield "chain to _id", q("Observation", ChainMatch("subject", "Patient", IdMatch(("1",))))
    yield "chain as a filter", q("Observation", IdMatch(("o1",)), ChainMatch(
        "subject", "Patient", TokenMatch("identifier", "110", "urn:id")), restriction=RESTRICTED)
    yield "chain to :not", q("Observation", ChainMatch(
        "subject", "Patient", TokenMatch("active", "false", negate=True)))
    yield "restriction", q("Observation", TokenMatch("code", "x"), restriction=RESTRICTED)
    yield "restriction only", q("Observation", restriction=RESTRICTED)
    yield "patient, code and date range", q(
        "Observation", ReferenceMatch("subject", "1", "Patient"),
        TokenMatch("code", "1234-5", "http://loinc.org"),
        DateMatch("date", "ge", DATE_MIN, DATE_MIN), DateMatch("date", "le", DATE_MAX, DATE_MAX))
    for kind in ("token", "string", "date", "number", "quantity", "reference", "uri"):
        yield f"sort {kind}", q("Observation", ReferenceMatch("subject", "1", "Patient"),
                                sort=(SortKey("p", kind), SortKey("p", kind, True)))
    yield "sort _id, -_lastUpdated", q("Observation", sort=(
        SortKey("_id", "token"), SortKey("_lastUpdated", "date", True)), restriction=RESTRICTED)
    yield "grants", q("Observation", TokenMatch("code", "x"), restriction=GRANTED)
    yield "grants only", q("Observation", restriction=GRANTED)
    yield "grants without base sources", q("Observation", restriction=GRANTS_ONLY)
    yield "grants on Patient", q("Patient", StringMatch("name", "wang"), restriction=GRANTED)
    yield "grants on Patient only", q("Patient", restriction=GRANTS_ONLY)
    yield "grants, patient and code", q(
        "Observation", ReferenceMatch("subject", "p1", "Patient"), TokenMatch("code", "x"),
        restriction=GRANTED)
    yield "grants and chain", q("Observation", ChainMatch(
        "subject", "Patient", TokenMatch("identifier", "110", "urn:id")), restriction=GRANTED)
    yield "grants, chain as a filter", q("Observation", IdMatch(("o1",)), ChainMatch(
        "subject", "Patient", TokenMatch("identifier", "110", "urn:id")), restriction=GRANTED)
    yield "grants and sort", q("Observation", TokenMatch("code", "x"), sort=(
        SortKey("date", "date", True), SortKey("_id", "token")), restriction=GRANTED)


CASES = list(cases())


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    import asyncio

    path = Path(tmp_path_factory.mktemp("plans")) / "plans.db"
    store = SQLiteStore(str(path))

    async def create() -> None:
        await store.open()
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


def plan(conn: sqlite3.Connection, sql: str, params: tuple) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def scans(details: list[str]) -> list[str]:
    return [d for d in details if d.startswith("SCAN")]


def drivers(query: SearchQuery) -> list[Driver]:
    """Every way the store may drive ``query``: the rank heuristic, each
    condition the planner may pick, and the type-index walk."""
    return ["rank", "walk", *[p.position for p in compile_probes(query)]]


@pytest.mark.parametrize(("name", "query"), CASES, ids=[name for name, _ in CASES])
def test_search_uses_indexes_only(db: sqlite3.Connection, name: str, query: SearchQuery) -> None:
    for driver in drivers(query):
        for cursor, snapshot in ((None, None), (Cursor(after_seq=10, offset=5), 100)):
            statement = compile_search(query, limit=51, cursor=cursor, snapshot_seq=snapshot,
                                       driver=driver)
            details = plan(db, statement.sql, statement.params)
            assert not scans(details), f"{name}, driven by {driver}: {details}"
            assert any(d.startswith("SEARCH") for d in details), details


@pytest.mark.parametrize(("name", "query"), CASES, ids=[name for name, _ in CASES])
def test_count_uses_indexes_only(db: sqlite3.Connection, name: str, query: SearchQuery) -> None:
    for driver in drivers(query):
        statement = compile_count(query, driver=driver)
        details = plan(db, statement.sql, statement.params)
        assert not scans(details), f"{name}, driven by {driver}: {details}"


@pytest.mark.parametrize(("name", "query"), CASES, ids=[name for name, _ in CASES])
def test_planner_probes_use_indexes_only(db: sqlite3.Connection, name: str,
                                         query: SearchQuery) -> None:
    for probe in compile_probes(query, after_seq=3):
        details = plan(db, probe.statement.sql, probe.run_params(PROBE_CAP))
        assert not scans([d for d in details if not d.startswith("SCAN (subquery")]), details


def test_selective_condition_drives_the_search(db: sqlite3.Connection) -> None:
    """A patient's observations: the reference index drives, code and date are
    checked per candidate through the (seq, param) indexes."""
    query = q("Observation", DateMatch("date", "ge", DATE_MIN, DATE_MIN),
              ReferenceMatch("subject", "1", "Patient"), TokenMatch("code", "c", "s"))
    statement = compile_search(query, limit=51)
    details = plan(db, statement.sql, statement.params)
    assert "SEARCH r USING INTEGER PRIMARY KEY (rowid=?)" in details
    driver = next(d for d in details if "PRIMARY KEY (type=?" in d)
    assert "target_id=? AND target_type=?" in driver
    assert any("idx_date_seq (seq=? AND param=?)" in d for d in details)
    assert any("idx_token_seq (seq=? AND param=?)" in d for d in details)
    # default order is the driver's seq order: no sort step
    assert not any("TEMP B-TREE" in d for d in details)


def test_read_many_uses_the_key_index(db: sqlite3.Connection) -> None:
    details = plan(db, read_many_sql(300), ("Observation", *[f"o{i}" for i in range(300)]))
    assert not scans(details), details
    assert any("resources_key (type=? AND id=?)" in d for d in details), details


@pytest.mark.parametrize("scope", [
    {"resource_type": "Observation", "id": "o1"},
    {"resource_type": "Observation"},
    {"resource_type": "Observation", "since": DATE_MIN, "before": DATE_MAX},
    {"since": DATE_MIN},
    {"since": DATE_MIN, "before": DATE_MAX},
])
@pytest.mark.parametrize("restriction", [RESTRICTED, GRANTED, GRANTS_ONLY],
                         ids=["restricted", "granted", "grants only"])
def test_history_uses_indexes_without_sorting(db: sqlite3.Connection, scope: dict,
                                              restriction: Restriction) -> None:
    page, count = history_statements(**{"resource_type": None, "id": None, "since": None,
                                        "before": None, **scope},
                                     limit=50, offset=0, restriction=restriction)
    for statement in (page, count):
        details = plan(db, statement.sql, statement.params)
        assert not scans(details), details
        assert not any("TEMP B-TREE" in d for d in details), details


@pytest.mark.parametrize("restriction", [GRANTED, GRANTS_ONLY], ids=["granted", "grants only"])
@pytest.mark.parametrize("rtype", ["Observation", "Patient"])
def test_reads_with_grants_use_indexes_only(db: sqlite3.Connection, restriction: Restriction,
                                            rtype: str) -> None:
    statements = [read_statement(rtype, "o1", restriction),
                  read_version_statement(rtype, "o1", 2, restriction),
                  read_many_statement(rtype, [f"o{i}" for i in range(300)], restriction)]
    for statement in statements:
        details = plan(db, statement.sql, statement.params)
        assert not scans(details), details
    many = plan(db, statements[2].sql, statements[2].params)
    assert any("resources_key (type=? AND id=?)" in d for d in many), many


def test_grant_membership_probes_the_seq_index(db: sqlite3.Connection) -> None:
    """A grant filters the driver's candidates: one probe of the row's
    reference entries (``(seq, …)``) per distinct set of patients, never a
    range of the reference index by patient."""
    query = q("Observation", TokenMatch("code", "c", "s"), restriction=GRANTED)
    statement = compile_search(query, limit=51)
    details = plan(db, statement.sql, statement.params)
    assert "SEARCH r USING INTEGER PRIMARY KEY (rowid=?)" in details
    probes = [d for d in details if "idx_reference_seq (seq=?)" in d]
    assert len(probes) == len(GRANTED.grants), details
    assert not any("TEMP B-TREE" in d for d in details), details


def test_grants_for_one_person_share_one_membership_probe(db: sqlite3.Connection) -> None:
    consent, glass = (Grant(patients=frozenset({"p1", "p2"}), sources=frozenset({src}),
                            params=frozenset({"subject"}), hidden_labels=hidden)
                      for src, hidden in (("org-b", frozenset({"HIV"})), ("org-c", frozenset())))
    query = q("Observation", TokenMatch("code", "c", "s"), restriction=Restriction(
        sources=frozenset({"org-a"}), grants=(consent, glass)))
    statement = compile_search(query, limit=51)
    assert statement.sql.count("EXISTS (SELECT 1 FROM idx_reference") == 1
    # and grants alike but for their patients become one
    other = Grant(patients=frozenset({"p9"}), sources=frozenset({"org-b"}),
                  params=frozenset({"subject"}), hidden_labels=frozenset({"HIV"}))
    joined = compile_search(q("Observation", restriction=Restriction(
        sources=frozenset({"org-a"}), grants=(consent, other))), limit=5)
    assert joined.sql.count("EXISTS") == 1 and {"p1", "p2", "p9"} <= set(joined.params)


def test_a_search_by_the_granted_patients_needs_no_membership_probe(
        db: sqlite3.Connection) -> None:
    """``subject=Patient/p1,Patient/p2`` already places every match with the
    consent's patients: the grant is only its source and label tests."""
    linked = SearchQuery("Observation", (AnyOf((ReferenceMatch("subject", "p1", "Patient"),
                                               ReferenceMatch("subject", "p2", "Patient"))),),
                         restriction=GRANTED)
    statement = compile_search(linked, limit=51)
    details = plan(db, statement.sql, statement.params)
    assert not scans(details)
    assert statement.sql.count("EXISTS") == 1  # the second grant (p3) still probes
    untyped = SearchQuery("Observation", (AnyOf((ReferenceMatch("subject", "p1"),)),),
                          restriction=GRANTED)
    assert compile_search(untyped, limit=51).sql.count("EXISTS") == 2
    not_granted = SearchQuery("Observation", (AnyOf((ReferenceMatch("performer", "p1",
                                                                    "Patient"),)),),
                              restriction=GRANTED)
    assert compile_search(not_granted, limit=51).sql.count("EXISTS") == 2


def test_grants_that_cannot_apply_are_left_out() -> None:
    """Type tests are resolved at compile time: an Encounter search carries
    only the grant without ``types``; a Patient one tests the id itself."""
    encounter = compile_search(q("Encounter", restriction=GRANTED), limit=5).sql
    assert encounter.count("EXISTS") == 1 and "r.type IN" not in encounter
    patient = compile_search(q("Patient", restriction=GRANTED), limit=5).sql
    assert patient.count("EXISTS") == 2
    assert patient.count("r.id IN (?, ?)") + patient.count("r.id = ?") == 2
    # no base sources and no grant for the type: nothing is visible
    nothing = compile_search(q("Encounter", restriction=Restriction(
        sources=frozenset(), grants=GRANTED.grants[1:])), limit=5)
    assert "AND 0 ORDER BY" in nothing.sql and "org-b" not in nothing.params


def test_detector_catches_a_table_scan(db: sqlite3.Connection) -> None:
    """The check itself can fail: ``source`` has no index of its own."""
    assert scans(plan(db, "SELECT * FROM resources WHERE source = ?", ("x",)))
