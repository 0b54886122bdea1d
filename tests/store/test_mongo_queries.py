"""Mongo-specific query behaviour: the sort pipeline, snapshot paging, chains and
restrictions, exercised through MongoStore over the in-memory double."""

from __future__ import annotations

from typing import Any

import pytest
from store.mongo_double import open_double_store

from hie.store.base import Store, Transaction, WriteRecord
from hie.store.index import IndexEntries
from hie.store.mongo import search
from hie.store.mongo.search import ChainTooBroad
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Cursor,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    StringMatch,
    TokenMatch,
)

LU = "2024-01-01T00:00:00.000000"


def _obs(id: str, *, dates: tuple[str, ...] = (), code: str | None = None,
         subject: str | None = None, source: str = "org-a", labels: tuple[str, ...] = (),
         version: int = 1, deleted: bool = False) -> WriteRecord:
    index = IndexEntries(
        date=[("date", d + "T00:00:00.000000", d + "T23:59:59.999999") for d in dates],
        token=([("code", "http://loinc.org", code)] if code else [])
        + [("_security", "http://terminology.hl7.org/CodeSystem/v3-ActCode", lab)
           for lab in labels],
        reference=[("subject", "Patient", subject)] if subject else [])
    return WriteRecord("Observation", id, version, LU, b"" if deleted else b"{}",
                       deleted=deleted, source=source, index=None if deleted else index)


def _patient(id: str, name: str, *, source: str = "org-a",
             labels: tuple[str, ...] = ()) -> WriteRecord:
    index = IndexEntries(string=[("name", name.lower(), name)],
                         token=[("_security", "s", lab) for lab in labels])
    return WriteRecord("Patient", id, 1, LU, b"{}", source=source, index=index)


async def _put(store: Store, *records: WriteRecord) -> None:
    async def fn(tx: Transaction) -> None:
        for r in records:
            await tx.put(r)

    await store.transact(fn)


async def _ids(store: Store, query: SearchQuery, limit: int = 100) -> list[str]:
    return [r.id for r in (await store.search(query, limit=limit)).resources]


@pytest.fixture
async def mstore() -> Any:
    """A MongoStore over a fresh double (the shared ``store`` fixture runs both back ends)."""
    opened = await open_double_store()
    yield opened
    await opened.close()


async def test_sort_puts_missing_values_last_in_both_directions(mstore: Store) -> None:
    await _put(mstore, _obs("none1"), _obs("mid", dates=("2024-02-01",)),
               _obs("span", dates=("2024-01-01", "2024-03-01")), _obs("none2"),
               _obs("late", dates=("2024-02-15",)))
    up = SearchQuery("Observation", sort=(SortKey("date", "date"),))
    down = SearchQuery("Observation", sort=(SortKey("date", "date", descending=True),))
    # ascending by smallest value, descending by largest; ties and missing by seq
    assert await _ids(mstore, up) == ["span", "mid", "late", "none1", "none2"]
    assert await _ids(mstore, down) == ["span", "late", "mid", "none1", "none2"]


async def test_sort_by_several_keys_breaks_ties_in_order(mstore: Store) -> None:
    await _put(mstore, _obs("b1", code="B", dates=("2024-01-01",)),
               _obs("a2", code="A", dates=("2024-02-01",)),
               _obs("a1", code="A", dates=("2024-01-01",)),
               _obs("x", dates=("2024-01-01",)))
    query = SearchQuery("Observation", sort=(SortKey("code", "token"),
                                             SortKey("date", "date", descending=True)))
    assert await _ids(mstore, query) == ["a2", "a1", "b1", "x"]


async def test_sorted_pages_ignore_resources_created_after_the_first(mstore: Store) -> None:
    await _put(mstore, *[_obs(f"o{i}", dates=(f"2024-01-0{i + 1}",)) for i in range(5)])
    query = SearchQuery("Observation", sort=(SortKey("date", "date", descending=True),))
    first = await mstore.search(query, limit=2)
    assert [r.id for r in first.resources] == ["o4", "o3"]
    # a new resource that would sort first must not shift the later pages
    await _put(mstore, _obs("newest", dates=("2024-12-31",)))
    second = await mstore.search(query, limit=2, cursor=first.next)
    third = await mstore.search(query, limit=2, cursor=second.next)
    assert [r.id for r in second.resources] == ["o2", "o1"]
    assert [r.id for r in third.resources] == ["o0"] and third.next is None
    assert first.next == Cursor(offset=2, snapshot_seq=5)


async def test_keyset_pages_follow_seq_and_see_new_resources(mstore: Store) -> None:
    await _put(mstore, *[_obs(f"o{i}", code="A") for i in range(3)])
    query = SearchQuery("Observation", where=(AnyOf((TokenMatch("code", "A"),)),))
    first = await mstore.search(query, limit=2)
    await _put(mstore, _obs("o3", code="A"))
    second = await mstore.search(query, limit=2, cursor=first.next)
    assert [r.id for r in first.resources] == ["o0", "o1"]
    assert [r.id for r in second.resources] == ["o2", "o3"] and second.next is None


async def test_chain_targets_are_restricted_too(mstore: Store) -> None:
    await _put(mstore, _patient("visible", "Li Wei"),
               _patient("other-org", "Li Wei", source="org-b"),
               _patient("hidden", "Li Wei", labels=("PSY",)),
               _obs("o-visible", subject="visible"), _obs("o-other", subject="other-org"),
               _obs("o-hidden", subject="hidden"))
    chain = ChainMatch("subject", "Patient", StringMatch("name", "li"))
    open_query = SearchQuery("Observation", where=(AnyOf((chain,)),))
    restricted = SearchQuery("Observation", where=(AnyOf((chain,)),),
                             restriction=Restriction(sources=frozenset({"org-a"}),
                                                     hidden_labels=frozenset({"PSY"})))
    assert await _ids(mstore, open_query) == ["o-visible", "o-other", "o-hidden"]
    assert await _ids(mstore, restricted) == ["o-visible"]
    assert await mstore.count(restricted) == 1


async def test_too_broad_a_chain_is_refused(
        mstore: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "CHAIN_TARGET_LIMIT", 2)
    await _put(mstore, *[_patient(f"p{i}", "Li") for i in range(3)])
    chain = ChainMatch("subject", "Patient", StringMatch("name", "li"))
    with pytest.raises(ChainTooBroad):
        await mstore.search(SearchQuery("Observation", where=(AnyOf((chain,)),)), limit=10)


async def test_a_tombstone_keeps_the_labels_of_what_it_deleted(mstore: Store) -> None:
    await _put(mstore, _obs("o1", labels=("HIV",)))
    await _put(mstore, _obs("o1", version=2, deleted=True))
    hide = Restriction(hidden_labels=frozenset({"HIV"}))
    assert (await mstore.read("Observation", "o1")).deleted
    assert await mstore.read("Observation", "o1", restriction=hide) is None
    assert await mstore.read_version("Observation", "o1", 2, restriction=hide) is None
    assert (await mstore.history(limit=10, restriction=hide)) == ([], 0)


async def test_history_applies_the_restriction_to_each_version(mstore: Store) -> None:
    await _put(mstore, _obs("o1", source="org-a"))
    second = _obs("o1", version=2, source="org-b")
    await _put(mstore, WriteRecord(**{**{f: getattr(second, f) for f in second.__slots__},
                                     "last_updated": "2024-01-02T00:00:00.000000"}))
    only_a = Restriction(sources=frozenset({"org-a"}))
    versions, total = await mstore.history(resource_type="Observation", id="o1", limit=10,
                                          restriction=only_a)
    assert [v.version for v in versions] == [1] and total == 1
    assert (await mstore.read("Observation", "o1", restriction=only_a)) is None


async def test_reference_without_type_matches_any_target_type(mstore: Store) -> None:
    await _put(mstore, _obs("o1", subject="x1"))
    any_type = SearchQuery("Observation", where=(AnyOf((ReferenceMatch("subject", "x1"),)),))
    wrong = SearchQuery("Observation",
                        where=(AnyOf((ReferenceMatch("subject", "x1", "Group"),)),))
    assert await _ids(mstore, any_type) == ["o1"]
    assert await _ids(mstore, wrong) == []
