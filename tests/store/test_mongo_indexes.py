"""Every query shape of the Mongo back end has a declared index, and open() creates them."""

from __future__ import annotations

from typing import Any

import pytest
from store.mongo_double import open_double_store

from hie.store.mongo.compile import ARRAY_OF_KIND, compile_condition, compile_query
from hie.store.mongo.indexes import ALL_INDEXES, RESOURCE_INDEXES, IndexSpec
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Condition,
    DateMatch,
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
