"""Every query shape of the Mongo back end has a declared index, and open() creates them."""

from __future__ import annotations

from typing import Any

import pytest
from store.mongo_double import open_double_store

from hie.store.base import WriteRecord
from hie.store.index import IndexEntries
from hie.store.mongo import visibility
from hie.store.mongo.compile import (
    ARRAY_OF_KIND,
    compile_condition,
    compile_query,
    membership_filter,
    restriction_filter,
)
from hie.store.mongo.indexes import ALL_INDEXES, RESOURCE_INDEXES, IndexSpec
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Condition,
    DateMatch,
    Grant,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    StringMatch,
    TokenMatch,
    UriMatch,
)

D1, D2 = "2024-01-01T00:00:00.000000", "2024-01-31T23:59:59.999999"

CONDITIONS: list[Condition] = [
    TokenMatch("code", "1234-5", "http://loinc.org"),
    TokenMatch("code", "1234-5"),
    TokenMatch("code", None, "http://loinc.org"),
    TokenMatch("code", "1234-5", ""),
    StringMatch("name", "li"),
    StringMatch("name", "Li", "exact"),
    StringMatch("name", "i", "contains"),
    *[DateMatch("date", p, D1, D2) for p in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")],
    *[NumberMatch("probability", p, 0.5, 0.45, 0.55) for p in ("eq", "ne", "gt", "ap")],
    QuantityMatch("value-quantity", "gt", 5.0, 4.5, 5.5),
    QuantityMatch("value-quantity", "eq", 5.0, 4.5, 5.5, "http://unitsofmeasure.org", "mg"),
    ReferenceMatch("subject", "p1", "Patient"),
    ReferenceMatch("subject", "p1"),
    UriMatch("url", "http://x.org/a"),
    UriMatch("url", "http://x.org", "below"),
    UriMatch("url", "http://x.org/a/b", "above"),
    MissingMatch("code", "token", False),
    ChainMatch("subject", "Patient", TokenMatch("identifier", "1")),
    *[LastUpdatedMatch(p, D1, D2) for p in ("eq", "gt", "lt", "ge", "le")],
]


def _equality_or_range_paths(flt: dict[str, Any], prefix: str = "") -> set[str]:
    """Field paths a filter compares (through $elemMatch/$and/$or), operators dropped."""
    paths: set[str] = set()
    for key, value in flt.items():
        if key in ("$and", "$or", "$nor"):
            for sub in value:
                paths |= _equality_or_range_paths(sub, prefix)
        elif not key.startswith("$"):
            path = prefix + key
            if isinstance(value, dict) and "$elemMatch" in value:
                paths |= _equality_or_range_paths(value["$elemMatch"], path + ".")
            else:
                paths.add(path)
    return paths


def _serving_index(paths: set[str]) -> IndexSpec | None:
    """An index whose leading keys are all compared by the filter: ``type``, then
    (for an index array) the parameter name, then a compared value."""
    for spec in RESOURCE_INDEXES:
        keys = [k for k, _ in spec.keys]
        lead = keys[:3] if keys[1].endswith(".p") else keys[:2]
        if set(lead) <= paths | {"type"} and keys[0] == "type":
            return spec
    return None


@pytest.mark.parametrize("cond", CONDITIONS, ids=repr)
def test_each_condition_shape_is_served_by_a_declared_index(cond: Condition) -> None:
    chains = {cond: ["p1"]} if isinstance(cond, ChainMatch) else {}
    flt = compile_condition(cond, "Observation", chains)
    paths = _equality_or_range_paths(flt)
    if isinstance(cond, MissingMatch):
        # Only the parameter name is compared; (type, <array>.p) is the prefix used.
        array = ARRAY_OF_KIND[cond.kind]
        assert any([k for k, _ in s.keys][:2] == ["type", f"{array}.p"] for s in RESOURCE_INDEXES)
        return
    assert _serving_index(paths) is not None, f"no index serves {sorted(paths)}"


def test_default_order_is_served_by_type_deleted_seq() -> None:
    flt = compile_query(SearchQuery("Observation"))
    keys = [k for k, _ in next(s for s in RESOURCE_INDEXES if s.name == "type_seq").keys]
    assert set(flt) == {"type", "deleted"}
    assert keys == ["type", "deleted", "seq"]


def test_a_missing_index_is_noticed() -> None:
    # The helper itself must be able to fail: a path no index starts with.
    assert _serving_index({"type", "tok.p", "tok.x"}) is None


async def test_open_creates_every_declared_index() -> None:
    store = await open_double_store()
    client = store.client  # type: ignore[attr-defined]
    db = client.get_database(store.db_name)  # type: ignore[attr-defined]
    for spec in ALL_INDEXES:
        info = await db.get_collection(spec.collection).index_information()
        assert spec.name in info, spec.name
        assert [tuple(k) for k in info[spec.name]["key"]] == list(spec.keys)
        if spec.expire_after_seconds is not None:
            assert info[spec.name]["expireAfterSeconds"] == spec.expire_after_seconds
    await store.open()  # idempotent
    await store.close()


def test_query_filters_lead_with_type_then_each_condition() -> None:
    query = SearchQuery("Observation", where=(AnyOf((CONDITIONS[0],)),))
    flt = compile_query(query)
    assert flt["type"] == "Observation" and flt["deleted"] is False
    assert flt["$and"][0] == {"tok": {"$elemMatch": {"p": "code", "s": "http://loinc.org",
                                                      "c": "1234-5"}}}


# ---- grants ---------------------------------------------------------------------

GRANT = Grant(patients=frozenset({"p1", "p2"}), sources=frozenset({"org-b"}),
              params=frozenset({"subject", "patient"}), hidden_labels=frozenset({"HIV"}))


def _index_named(name: str) -> list[str]:
    return [k for k, _ in next(s for s in ALL_INDEXES if s.name == name).keys]


@pytest.mark.parametrize("rtype", ["Observation", "Patient"])
def test_grant_membership_of_a_known_type_is_served_by_ref_target(rtype: str) -> None:
    member = membership_filter(GRANT, rtype)
    assert member is not None
    refs = member["$or"][1] if rtype == "Patient" else member
    paths = _equality_or_range_paths({"type": rtype, **refs})
    assert _serving_index(paths) is not None and {"ref.p", "ref.i", "ref.t"} <= paths
    if rtype == "Patient":  # the Patient resources themselves: by _id
        assert member["$or"][0] == {"_id": {"$in": ["Patient/p1", "Patient/p2"]}}


def test_grant_membership_of_any_type_is_served_by_id_and_ref_patient() -> None:
    """System history resolves a grant's members without a type: each branch
    of the ``$or`` has its own index (``_id``; ``ref_patient``)."""
    member = membership_filter(GRANT, None)
    assert member is not None
    by_id, by_ref = member["$or"]
    assert set(by_id) == {"_id"}
    paths = _equality_or_range_paths(by_ref)
    keys = _index_named("ref_patient")
    assert set(keys) <= paths and keys[0] == "ref.i"


def test_restriction_with_grants_is_one_or_beside_the_conditions() -> None:
    restriction = Restriction(sources=frozenset({"org-a"}), grants=(GRANT,))
    query = SearchQuery("Observation", where=(AnyOf((CONDITIONS[0],)),),
                        restriction=restriction)
    flt = compile_query(query)
    # the conditions still lead with type and use their indexes; the
    # restriction filters what they select
    assert flt["type"] == "Observation" and "$and" in flt
    base, granted = flt["$or"]
    assert base == {"source": {"$in": ["org-a"]}}
    assert granted["source"] == {"$in": ["org-b"]} and granted["labels"] == {"$nin": ["HIV"]}
    assert "type" not in granted and "_id" not in str(granted)


def test_grant_values_never_become_operators() -> None:
    hostile = frozenset({"$ne", "$where", "{\"$gt\": \"\"}"})
    grant = Grant(patients=hostile, sources=hostile, params=hostile, hidden_labels=hostile,
                  types=hostile)
    flt = restriction_filter(Restriction(sources=hostile, grants=(grant,)), None,
                             members=None)
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            keys.update(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(flt)
    assert keys <= {"$or", "$in", "$nin", "$elemMatch", "_id", "source", "labels", "type",
                    "ref", "p", "i", "t"}, keys


async def test_history_with_grants_resolves_members_and_refuses_beyond_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions carry no index entries: the members a grant opens are listed
    from ``resources`` first (bounded, like chain targets)."""
    store = await open_double_store()

    async def write(tx: Any) -> None:
        for n in range(3):
            await tx.put(WriteRecord(
                "Observation", f"o{n}", 1, f"2024-01-01T00:00:0{n}.000000", b"{}",
                source="org-b", index=IndexEntries(reference=[("subject", "Patient", "p1")])))

    await store.transact(write)
    restriction = Restriction(sources=frozenset({"org-a"}), grants=(GRANT,))
    versions, total = await store.history(limit=10, restriction=restriction)
    assert total == 3 and sorted(r.id for r in versions) == ["o0", "o1", "o2"]
    monkeypatch.setattr(visibility, "GRANT_MEMBER_LIMIT", 2)
    with pytest.raises(visibility.GrantTooBroad):
        await store.history(limit=10, restriction=restriction)
    # one resource's history resolves one member only
    versions, total = await store.history(resource_type="Observation", id="o1", limit=10,
                                          restriction=restriction)
    assert [r.id for r in versions] == ["o1"] and total == 1
    await store.close()
