"""The cheap audit path gives exactly what the generic one gave.

``hie.audit.index.direct_index`` must equal the FHIR layer's extractor (plus the
regional person rule) for every event the exchange writes, and ``seal`` must
give the same event, stored bytes and hash as before it was made cheaper
(``audit_reference``): the chain is verified against stored events, so not a
byte may move.
"""

from __future__ import annotations

import random
from typing import Any

import audit_reference as ref
import orjson
import pytest

from hie.audit import index as fast_index
from hie.audit.chain import GENESIS, chain_hash, prepare, seal, seal_prepared, without_hash
from hie.audit.fhir import index_entries, to_audit_event
from hie.audit.model import AuditRecord, mask_resident_ids, redact_query
from hie.identity.resident_id import TEXT_PATTERN, mask_text
from hie.store.index import IndexEntries

RESIDENT_ID = "11010519491231002X"
OLD_RESIDENT_ID = "110105491231002"
STAMP = "2026-11-25T08:00:00.000000"

# -- a broad set of records ------------------------------------------------------

INTERACTIONS = [
    "read", "vread", "update", "patch", "delete", "create", "search-type", "search-system",
    "history-instance", "history-type", "history-system", "capabilities", "transaction",
    "batch", "operation", "$everything", "$ihe-pix", "login", "link", "unlink", "merge",
    "consent", "something-new",
]
OUTCOMES: list[tuple[str, int | None]] = [
    ("permit", 200), ("permit", 201), ("permit", None), ("permit", 404), ("permit", 503),
    ("deny", 401), ("deny", 403), ("deny", None), ("error", 500), ("error", 400),
    ("error", None),
]
CALLERS: list[dict[str, Any]] = [
    {},
    {"organization": "h1", "client_id": "h1-his", "practitioner": "doc-1"},
    {"organization": "h1", "client_id": "h1-his"},
    {"organization": "h2"},
    {"client_id": "admin"},
    {"practitioner": "doc-9"},
    {"organization": "h 3", "practitioner": "doc/with/slashes"},
    {"organization": "h1", "practitioner": "http://other.example/fhir/Patient/p1"},
]
PURPOSES: list[dict[str, Any]] = [
    {},
    {"purpose_of_use": "TREAT"},
    {"purpose_of_use": "ETREAT", "reason": f"unconscious, id {RESIDENT_ID}"},
    {"purpose_of_use": "TREAT", "consultation": "cons-1"},
    {"purpose_of_use": "TREAT", "consultation": "ServiceRequest/cons-1",
     "reason": "second opinion"},
    {"consultation": "ServiceRequest/cons-2"},
    {"reason": "a reason without a purpose"},
]
PERSONS = [None, "person-1", "p 2"]
PATIENTS: list[tuple[str, ...]] = [
    (), ("Patient/p1",), ("Patient/p1", "Patient/q7", "Patient/p1"),
    (f"Patient/{RESIDENT_ID}",), ("http://other.example/fhir/Patient/x9", "urn:uuid:1234"),
    tuple(f"Patient/783f5432-be09-48b5-a8d8-b3dc4522e6f{i}" for i in range(10)),
]
RESOURCES: list[tuple[str | None, tuple[str, ...]]] = [
    (None, ()), ("Patient", ()), ("Observation", ("o1",)), ("Patient", ("p1",)),
    ("Patient", ("Patient/p1",)), (None, ("Observation/o1", "Condition/c2")),
    ("Observation", tuple(f"o-{i:04d}" for i in range(50))),
    ("Patient", tuple(f"Patient/783f5432-be09-48b5-a8d8-b3dc4522e6f{i % 10}"
                      for i in range(50))),
    ("Observation", (f"Patient/{RESIDENT_ID}", "Observation/a/b", "x" * 70)),
]
QUERIES: list[dict[str, Any]] = [
    {}, {"count": 0}, {"count": 12}, {"query": ""}, {"query": "?"}, {"query": "&&"},
    {"query": "identifier=urn%3Aoid%3A1.2.3%7C12345", "count": 1},
    {"query": "patient=Patient/p1&code=1234-5", "count": 3},
    {"query": f"identifier=urn:oid:2.16.156.10011.1.1%7C{RESIDENT_ID}&access_token=a.b"},
    {"query": f"?name=Zoë+Li&birthdate=ge1990&x={OLD_RESIDENT_ID}&flag", "count": 50},
]
DETAILS = [None, "", "no consent", f"matched {RESIDENT_ID} and {OLD_RESIDENT_ID}"]
RECORDED = [
    None, STAMP, "2024-02-29T23:59:59.999999", "2026-02-30T00:00:00.000000",
    "2026-13-01T00:00:00.000000", "2026-01-01T24:00:00.000000",
    "2026-01-01T23:59:60.000000", "0000-01-01T00:00:00.000000",
    "9999-12-31T23:59:59.999999", "9998-12-31T23:59:59.999999", "2026-01-01",
    "2026-01-01T10:00:00+08:00", "not a date",
]
EXTRAS: list[dict[str, Any]] = [
    {}, {"token_id": "jti-1"}, {"request_id": "req-1"},
    {"token_id": "jti-2", "request_id": "req-2"}, {"token_id": ""},
]
DIMENSIONS: list[list[Any]] = [INTERACTIONS, OUTCOMES, CALLERS, PURPOSES, PERSONS,
                               PATIENTS, RESOURCES, QUERIES, DETAILS, RECORDED, EXTRAS]


def _record(choice: list[Any]) -> AuditRecord:
    interaction, (outcome, status), caller, purpose, person, patients, \
        (rtype, rids), query, detail, recorded, extra = choice
    fields: dict[str, Any] = {
        "interaction": interaction, "outcome": outcome, "status": status, "person": person,
        "patient_refs": patients, "resource_type": rtype, "resource_ids": rids,
        "detail": detail, **caller, **purpose, **query, **extra}
    if recorded is not None:
        fields["recorded"] = recorded
    return AuditRecord(**fields)


def _records() -> list[AuditRecord]:
    """Every value of every dimension at least once, the rest drawn at random
    (seeded), and some at random altogether."""
    rng = random.Random(20261125)
    out = []
    for d, values in enumerate(DIMENSIONS):
        for value in values:
            choice = [rng.choice(v) for v in DIMENSIONS]
            choice[d] = value
            out.append(_record(choice))
    out += [_record([rng.choice(v) for v in DIMENSIONS]) for _ in range(200)]
    out.append(AuditRecord("search-type", "permit", 200, organization="benchhosp",
                           client_id="benchhosp-bench-1", token_id="tok-abc",
                           patient_refs=("Patient/p1",), resource_type="Patient",
                           resource_ids=("Patient/p1",),
                           query="identifier=urn%3Aoid%3A1.2.3%7C12345", count=1))
    return out


RECORDS = _records()


def _ids(records: list[AuditRecord]) -> list[str]:
    return [f"{i}-{r.interaction}-{r.outcome}" for i, r in enumerate(records)]


def _assert_same_index(got: IndexEntries, want: IndexEntries) -> None:
    for kind in ("token", "string", "date", "number", "quantity", "reference", "uri"):
        assert getattr(got, kind) == getattr(want, kind), kind


# -- the index -------------------------------------------------------------------

def test_the_fast_index_is_written_for_the_search_parameter_table() -> None:
    """Fails when the AuditEvent rows of schemas/search_parameters.py change:
    until hie/audit/index.py handles them (WRITTEN_FOR and the handlers),
    every audit event is indexed by the slow generic extractor."""
    assert fast_index.table_rows() == fast_index.WRITTEN_FOR, (
        "the AuditEvent search parameters changed: update hie/audit/index.py")
    assert fast_index.FAST


def test_every_table_path_has_a_handler() -> None:
    tops = {path.split(".")[1] for _, _, paths in fast_index.table_rows() for path in paths}
    assert tops == set(fast_index._HANDLERS)


@pytest.mark.parametrize("record", RECORDS, ids=_ids(RECORDS))
def test_index_entries_equal_the_generic_extractor(record: AuditRecord) -> None:
    event, _, _ = seal(record, 7, GENESIS, STAMP)
    direct = fast_index.direct_index(event)
    assert direct is not None, "a sealed event must take the fast path"
    want = ref.index_entries(event)
    _assert_same_index(direct, want)
    _assert_same_index(index_entries(event), want)
    unsealed = to_audit_event(record)  # no id, meta or chain
    assert fast_index.direct_index(unsealed) is not None
    _assert_same_index(index_entries(unsealed), ref.index_entries(unsealed))


def _event(**changes: Any) -> dict[str, Any]:
    record = AuditRecord("search-type", "permit", 200, organization="h1", client_id="c",
                         practitioner="doc-1", person="person-1",
                         patient_refs=("Patient/p1",), resource_type="Observation",
                         resource_ids=("o1", "o2"), query="code=1", count=2,
                         purpose_of_use="TREAT", token_id="jti", request_id="r")
    event = seal(record, 1, GENESIS, STAMP)[0]
    event.update(changes)
    return event


def _agent(**changes: Any) -> list[dict[str, Any]]:
    agents = _event()["agent"]
    agents[-1].update(changes)
    return agents


def _entity(**changes: Any) -> list[dict[str, Any]]:
    entities = _event()["entity"]
    entities[1].update(changes)
    return entities


CODING = {"system": "s", "code": "c"}
CONCEPT = {"coding": [CODING], "text": "t"}
UNUSUAL: dict[str, dict[str, Any]] = {
    "type as a list": {"type": [CODING, CODING]},
    "type as a concept": {"type": CONCEPT},
    "type without code": {"type": {"system": "s", "value": "v"}},
    "subtype as a coding": {"subtype": CODING},
    "subtype null": {"subtype": None},
    "action as a list": {"action": ["E", "R"]},
    "outcome as a number": {"outcome": 0},
    "recorded as a period": {"recorded": {"start": "2026-01-01"}},
    "recorded null": {"recorded": None},
    "purpose as a coding": {"purposeOfEvent": [CODING]},
    "purpose as a string": {"purposeOfEvent": ["TREAT"]},
    "purpose with odd codings": {"purposeOfEvent": [{"coding": [CODING, "x", {"code": 1}]}]},
    "agent as a dict": {"agent": {"who": {"reference": "Practitioner/x"}}},
    "agent with a role": {"agent": _agent(role=[CONCEPT])},
    "agent who as a list": {"agent": _agent(who=[{"reference": "Patient/a"}])},
    "agent who a patient": {"agent": _agent(who={"reference": "Patient/a"})},
    "agent who empty": {"agent": _agent(who={"reference": ""})},
    "agent altid as a list": {"agent": _agent(altId=["a", "b"])},
    "agent policy as a string": {"agent": _agent(policy="urn:x")},
    "agent policies odd": {"agent": _agent(policy=["", "urn:x", 3, "urn:x"])},
    "agent purpose as a dict": {"agent": _agent(purposeOfUse=CONCEPT)},
    "agents not dicts": {"agent": ["x", *_agent()]},
    "source as a list": {"source": [{"site": "a"}]},
    "source site as a list": {"source": {"site": ["a"]}},
    "source observer a reference": {"source": {"site": "a",
                                               "observer": {"reference": "Device/d"}}},
    "entity as a dict": {"entity": {"what": {"reference": "Patient/p"}}},
    "entity not a dict": {"entity": ["x"]},
    "entity what as a list": {"entity": _entity(what=[{"reference": "Patient/p"}])},
    "entity what null": {"entity": _entity(what=None)},
    "entity reference null": {"entity": _entity(what={"reference": None})},
    "entity reference a number": {"entity": _entity(what={"reference": 5})},
    "entity reference empty": {"entity": _entity(what={"reference": ""})},
    "entity a person twice": {"entity": _entity(what={"reference": "urn:hie:person:person-1"})},
    "entity role as a list": {"entity": _entity(role=[CODING, CODING])},
    "entity type as a concept": {"entity": _entity(type=CONCEPT)},
    "meta with a tag": {"meta": {"tag": [CODING]}},
    "meta as a list": {"meta": [{"tag": [CODING]}]},
    "not an AuditEvent": {"resourceType": "Provenance"},
    "unknown elements": {"agentRole": "x", "period": {"start": "2026"}, "extension": None},
}


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_events_are_indexed_as_the_extractor_does(name: str) -> None:
    event = _event(**UNUSUAL[name])
    try:
        want: IndexEntries | type[Exception] = ref.index_entries(event)
    except Exception as exc:  # the generic path's own failures stay failures
        with pytest.raises(type(exc)):
            index_entries(event)
        return
    assert isinstance(want, IndexEntries)
    _assert_same_index(index_entries(event), want)


def test_key_order_is_followed() -> None:
    event = _event()
    shuffled = dict(reversed(list(event.items())))
    _assert_same_index(index_entries(shuffled), ref.index_entries(shuffled))
    assert fast_index.direct_index(shuffled) is not None


# -- the event, its bytes and its hash ---------------------------------------------

@pytest.mark.parametrize("record", RECORDS, ids=_ids(RECORDS))
def test_seal_is_byte_for_byte_what_it_was(record: AuditRecord) -> None:
    for sequence, previous in ((1, GENESIS), (12345, "ab" * 32)):
        event, body, digest = seal(record, sequence, previous, STAMP)
        want_event, want_body, want_digest = ref.seal(record, sequence, previous, STAMP)
        assert body == want_body
        assert digest == want_digest
        assert event == want_event
        assert orjson.dumps(event) == orjson.dumps(want_event)
        assert chain_hash(previous, without_hash(event)) == digest  # as verify checks it
    assert orjson.dumps(to_audit_event(record)) == orjson.dumps(ref.to_audit_event(record))


#: Hashes of events sealed before the audit path was made cheaper.
PINNED = {
    "a doctor's read": (
        AuditRecord("read", "permit", 200, organization="h1", client_id="h1-his",
                    practitioner="doc-1", patient_refs=("Patient/p1",),
                    resource_type="Observation", resource_ids=("o1",),
                    purpose_of_use="TREAT", request_id="req-1", recorded=STAMP),
        "f22978e55191d768b0a23a1060f27de2029a383ff5c03f570b1a64f224f6bb3e"),
    "a search": (
        AuditRecord("search-type", "permit", 200, organization="benchhosp",
                    client_id="benchhosp-bench-1", token_id="tok-abc",
                    patient_refs=("Patient/p1",), resource_type="Patient",
                    resource_ids=("Patient/p1",),
                    query=f"identifier=urn%3Aoid%3A1.2.3%7C{RESIDENT_ID}", count=1,
                    recorded=STAMP),
        "11cf08a37a0d8d8b3f7a82341d0bd8d3a99f5a8c5a26c70f1ed58a684718cd67"),
    "a refused login": (
        AuditRecord("login", "deny", 401, detail="bad password", recorded=STAMP),
        "26b6c27c2aab323fdd45b38ba579ff4ef1e2f016bc02eeedb7310d9e1730a57a"),
}


@pytest.mark.parametrize("record", RECORDS, ids=_ids(RECORDS))
def test_a_prepared_record_seals_and_indexes_as_the_record(record: AuditRecord) -> None:
    """The log prepares records before it takes the write lock: what it stores
    must be what sealing the record there would have stored."""
    stamp = "2026-12-08T01:02:03.456789"
    prepared = prepare(record)
    for sequence, previous in ((1, GENESIS), (42, "ab" * 32)):
        event, body, digest = seal(record, sequence, previous, stamp)
        assert seal_prepared(prepared, sequence, previous, stamp) == (event, body, digest)
        _assert_same_index(prepared.index, index_entries(event))


@pytest.mark.parametrize("name", list(PINNED))
def test_hashes_of_known_events_do_not_change(name: str) -> None:
    record, digest = PINNED[name]
    assert seal(record, 3, "cd" * 32, STAMP)[2] == digest


# -- redaction ---------------------------------------------------------------------

def test_the_masking_pattern_is_the_one_the_digit_prefilter_was_written_for() -> None:
    """hie.audit.model skips masking text without 15 digits in a row: true of
    every match of this pattern; re-check that before changing the pattern."""
    assert TEXT_PATTERN.pattern == (
        r"(?<![0-9])([1-9][0-9]{5})(?:((?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
        r"(?:0[1-9]|[12][0-9]|3[01]))([0-9]{3}[0-9Xx])(?![0-9A-Za-z])"
        r"|([0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]))([0-9]{3})(?![0-9]))")


def _texts() -> list[str]:
    rng = random.Random(7)
    parts = [RESIDENT_ID, RESIDENT_ID.lower(), OLD_RESIDENT_ID, "110105194912310", "12345",
             "Patient/", "|", " ", "x", "0", "9", "-", "%7C", "１２３", "20260101"]
    out = ["", "1" * 14, "1" * 15, "1" * 18, f"a{RESIDENT_ID}b", f"{OLD_RESIDENT_ID}X"]
    out += ["".join(rng.choice(parts) for _ in range(rng.randint(1, 8)))
            for _ in range(2000)]
    out += ["".join(rng.choice("0123456789Xx-") for _ in range(rng.randint(10, 40)))
            for _ in range(2000)]
    return out


def test_masking_with_the_prefilter_equals_the_masking_rule() -> None:
    for text in _texts():
        assert mask_resident_ids(text) == mask_text(text), text


def _queries() -> list[str]:
    rng = random.Random(11)
    parts = ["a", "B", "=", "=", "&", "&", "?", "%", "%2", "%25", "%3D", "%26", "%7C", "%7c",
             "%zz", "%E4%B8%AD", "%FF", "+", " ", "|", ":", "/", ",", "$", "*", "~", "-", "_",
             ".", "é", "中", "access_token", "ACCESS_TOKEN", "Password", "%61ccess_token",
             "access+token", "id_token", "code", RESIDENT_ID, OLD_RESIDENT_ID, "\n", "#", ";",
             "!", "'", "(", ")", "\x00", "\u212a"]
    return [q.get("query") for q in QUERIES if "query" in q] + [
        "".join(rng.choice(parts) for _ in range(rng.randint(0, 12))) for _ in range(5000)]


def test_redacted_queries_are_what_parse_qsl_and_urlencode_gave() -> None:
    for query in _queries():
        assert redact_query(query) == ref.redact_query(query), query
    assert redact_query(f"x={OLD_RESIDENT_ID}&token=abc") == "x=110105******002&token=***"
    assert redact_query("?%61ccess_token=abc&a+b=%7C") == "access_token=***&a+b=|"
