"""Contract: sort order, paging (keyset and sorted) while data is written, counts."""

from __future__ import annotations

import pytest
from store.conftest import Records, day, ts

from hie.store.base import Store
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, Cursor, SearchQuery, SortKey, TokenMatch

TAGGED = IndexEntries(token=[("tag", "", "x")])


def tagged() -> SearchQuery:
    return SearchQuery("Observation", (AnyOf((TokenMatch("tag", "x"),)),))


async def walk(store: Store, query: SearchQuery, limit: int) -> list[list[str]]:
    """Every page of ``query``, as lists of ids."""
    pages: list[list[str]] = []
    cursor: Cursor | None = None
    while True:
        page = await store.search(query, limit=limit, cursor=cursor)
        pages.append([r.id for r in page.resources])
        if page.next is None:
            return pages
        cursor = page.next


# ---- sort -------------------------------------------------------------------

@pytest.fixture
async def dated(store: Store, records: Records) -> Store:
    def dates(*ranges: tuple[str, str], name: str | None = None) -> IndexEntries:
        return IndexEntries(date=[("date", lo, hi) for lo, hi in ranges],
                            string=[("name", name, name.upper())] if name else [])

    await records.put(
        store,
        records.record("Observation", "march", index=dates(
            ("2024-03-01T00:00:00.000000", "2024-03-31T23:59:59.999999"), name="b"),
            last_updated=ts(30)),
        records.record("Observation", "mid-march", index=dates(day("2024-03-15"), name="a"),
                       last_updated=ts(10)),
        records.record("Observation", "undated", index=dates(name="a"), last_updated=ts(20)),
        records.record("Observation", "jan-and-june",
                       index=dates(day("2024-01-01"), day("2024-06-01"), name="c"),
                       last_updated=ts(40)),
        records.record("Observation", "mid-march-too", index=dates(day("2024-03-15")),
                       last_updated=ts(5)),
    )
    return store


def sorted_by(*keys: SortKey) -> SearchQuery:
    return SearchQuery("Observation", sort=keys)


async def test_ascending_sorts_by_smallest_value_missing_last_ties_by_seq(
        dated: Store, records: Records) -> None:
    ids = await records.ids(dated, sorted_by(SortKey("date", "date")))
    assert ids == ["jan-and-june", "march", "mid-march", "mid-march-too", "undated"]


async def test_descending_sorts_by_largest_value_missing_last_ties_by_seq(
        dated: Store, records: Records) -> None:
    ids = await records.ids(dated, sorted_by(SortKey("date", "date", descending=True)))
    assert ids == ["jan-and-june", "march", "mid-march", "mid-march-too", "undated"]


async def test_several_sort_keys(dated: Store, records: Records) -> None:
    ids = await records.ids(dated, sorted_by(SortKey("name", "string"),
                                             SortKey("date", "date", descending=True)))
    assert ids == ["mid-march", "undated", "march", "jan-and-june", "mid-march-too"]
    ids = await records.ids(dated, sorted_by(SortKey("name", "string", descending=True)))
    assert ids == ["jan-and-june", "march", "mid-march", "undated", "mid-march-too"]


async def test_sort_by_id_and_last_updated(dated: Store, records: Records) -> None:
    assert await records.ids(dated, sorted_by(SortKey("_id", "token"))) == [
        "jan-and-june", "march", "mid-march", "mid-march-too", "undated"]
    assert await records.ids(dated, sorted_by(SortKey("_id", "token", descending=True))) == [
        "undated", "mid-march-too", "mid-march", "march", "jan-and-june"]
    assert await records.ids(dated, sorted_by(SortKey("_lastUpdated", "date"))) == [
        "mid-march-too", "mid-march", "undated", "march", "jan-and-june"]
    newest_first = await records.ids(dated, sorted_by(SortKey("_lastUpdated", "date",
                                                              descending=True)))
    assert newest_first == ["jan-and-june", "march", "undated", "mid-march", "mid-march-too"]


async def test_sort_applies_to_matches_only(dated: Store, records: Records) -> None:
    query = SearchQuery("Observation", (AnyOf((TokenMatch("missing", "x", negate=True),)),),
                        sort=(SortKey("date", "date", descending=True),))
    assert (await records.ids(dated, query))[:2] == ["jan-and-june", "march"]


# ---- keyset paging (default order) ------------------------------------------

async def test_default_order_is_creation_order(store: Store, records: Records) -> None:
    for rid in ("c", "a", "b"):
        await records.create(store, "Observation", rid, index=TAGGED)
    await records.put(store, records.record("Observation", "c", version=2, index=TAGGED))
    assert await records.ids(store, tagged()) == ["c", "a", "b"]


async def test_next_is_none_on_the_last_page(store: Store, records: Records) -> None:
    await records.put(store, *[records.record("Observation", f"o{i}", index=TAGGED)
                               for i in range(4)])
    assert await walk(store, tagged(), 2) == [["o0", "o1"], ["o2", "o3"]]
    assert await walk(store, tagged(), 4) == [["o0", "o1", "o2", "o3"]]
    assert await walk(store, tagged(), 3) == [["o0", "o1", "o2"], ["o3"]]
    empty = await store.search(SearchQuery("Patient"), limit=5)
    assert empty.resources == [] and empty.next is None


async def test_keyset_pages_stay_correct_while_data_is_written(
        store: Store, records: Records) -> None:
    await records.put(store, *[records.record("Observation", f"o{i}", index=TAGGED)
                               for i in range(6)])
    first = await store.search(tagged(), limit=2)
    assert [r.id for r in first.resources] == ["o0", "o1"]

    # between pages: a new match, an update and a delete of earlier resources,
    # and a delete of a resource the next page would have shown
    await records.create(store, "Observation", "new", index=TAGGED)
    await records.put(store, records.record("Observation", "o0", version=2, index=TAGGED))
    await records.put(store, records.record("Observation", "o1", version=2, deleted=True))
    await records.put(store, records.record("Observation", "o3", version=2, deleted=True))

    second = await store.search(tagged(), limit=2, cursor=first.next)
    third = await store.search(tagged(), limit=2, cursor=second.next)
    assert [r.id for r in second.resources] == ["o2", "o4"]
    assert [r.id for r in third.resources] == ["o5", "new"]
    assert third.next is None


async def test_keyset_cursor_from_a_seq(store: Store, records: Records) -> None:
    seqs = await records.put(store, *[records.record("Observation", f"o{i}", index=TAGGED)
                                      for i in range(5)])
    page = await store.search(tagged(), limit=10, cursor=Cursor(after_seq=seqs[2]))
    assert [r.id for r in page.resources] == ["o3", "o4"]


# ---- sorted paging ----------------------------------------------------------

async def test_sorted_pages_stay_correct_while_data_is_written(
        store: Store, records: Records) -> None:
    def on(date: str) -> IndexEntries:
        return IndexEntries(token=[("tag", "", "x")], date=[("date", *day(date))])

    await records.put(store, *[records.record("Observation", f"d{n}", index=on(f"2024-01-0{n}"))
                               for n in (5, 3, 1, 4, 2)])
    query = SearchQuery("Observation", (AnyOf((TokenMatch("tag", "x"),)),),
                        sort=(SortKey("date", "date"),))

    first = await store.search(query, limit=2)
    assert [r.id for r in first.resources] == ["d1", "d2"]
    assert first.snapshot_seq is not None and first.snapshot_seq == await store.max_seq()
    assert first.next is not None and first.next.snapshot_seq == first.snapshot_seq

    # a new resource that would sort first must not shift the later pages
    await records.create(store, "Observation", "d0", index=on("2024-01-01"))
    second = await store.search(query, limit=2, cursor=first.next)
    third = await store.search(query, limit=2, cursor=second.next)
    assert [r.id for r in second.resources] == ["d3", "d4"]
    assert [r.id for r in third.resources] == ["d5"]
    assert third.next is None
    # a fresh search sees it
    assert (await records.ids(store, query))[:2] == ["d1", "d0"]


async def test_sorted_walk_returns_every_match_once(dated: Store) -> None:
    query = sorted_by(SortKey("date", "date", descending=True))
    pages = await walk(dated, query, 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(pages, []) == ["jan-and-june", "march", "mid-march", "mid-march-too", "undated"]


# ---- count ------------------------------------------------------------------

async def test_count_counts_current_matches(store: Store, records: Records) -> None:
    assert await store.count(tagged()) == 0
    await records.put(store, *[records.record("Observation", f"o{i}", index=TAGGED)
                               for i in range(7)])
    await records.create(store, "Observation", "untagged")
    await records.create(store, "Condition", "c1", index=TAGGED)
    await records.put(store, records.record("Observation", "o6", version=2, deleted=True))
    assert await store.count(tagged()) == 6
    assert await store.count(SearchQuery("Observation")) == 7
    assert await store.count(SearchQuery("Observation", sort=(SortKey("_id", "token"),))) == 7
