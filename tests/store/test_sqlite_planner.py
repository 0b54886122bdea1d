"""SQLite: whatever the planner picks to drive a search, the answer is the same.

With the small data of a test every probe stays under the cap, so the
type-index walk (chosen only when every condition is broad) would go untested;
here the cap is lowered to make it happen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store.conftest import Records, day

from hie.store.index import IndexEntries
from hie.store.query import (
    AnyOf,
    Cursor,
    DateMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    TokenMatch,
)
from hie.store.sqlite import SQLiteStore, planner


@pytest.fixture
async def populated(tmp_path: Path, records: Records) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "hie.db"))
    await store.open()
    batch = []
    for n in range(60):
        batch.append(records.record(
            "Observation", f"o{n:02d}", source="org-a" if n % 3 else "org-b",
            index=IndexEntries(
                token=[("status", "", "final" if n % 4 else "preliminary"),
                       ("code", "http://loinc.org", f"c{n % 5}")],
                reference=[("subject", "Patient", f"p{n % 6}")],
                date=[("date", *day(f"2024-{1 + n % 12:02d}-01"))])))
    await records.put(store, *batch)
    await records.put(store, records.record("Observation", "o07", version=2, deleted=True))
    yield store
    await store.close()


QUERIES = {
    "status": SearchQuery("Observation", (AnyOf((TokenMatch("status", "final"),)),)),
    "status and code": SearchQuery("Observation", (
        AnyOf((TokenMatch("status", "final"),)), AnyOf((TokenMatch("code", "c2"),)))),
    "code OR, date, restricted": SearchQuery("Observation", (
        AnyOf((TokenMatch("code", "c1"), TokenMatch("code", "c3"))),
        AnyOf((DateMatch("date", "ge", *day("2024-03-01")),))),
        restriction=Restriction(sources=frozenset({"org-a"}))),
    "patient and not preliminary": SearchQuery("Observation", (
        AnyOf((ReferenceMatch("subject", "p1", "Patient"),)),
        AnyOf((TokenMatch("status", "preliminary", negate=True),)))),
}


async def every_page(store: SQLiteStore, query: SearchQuery, limit: int) -> list[str]:
    ids: list[str] = []
    cursor: Cursor | None = None
    while True:
        page = await store.search(query, limit=limit, cursor=cursor)
        ids += [r.id for r in page.resources]
        if page.next is None:
            return ids
        cursor = page.next


@pytest.mark.parametrize("name", list(QUERIES))
async def test_walk_and_driven_searches_agree(populated: SQLiteStore, name: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    query = QUERIES[name]
    driven = await every_page(populated, query, 7)
    driven_count = await populated.count(query)
    sorted_query = SearchQuery(query.resource_type, query.where,
                               (SortKey("date", "date", True),), query.restriction)
    driven_sorted = await every_page(populated, sorted_query, 7)

    monkeypatch.setattr(planner, "PROBE_CAP", 1)  # every condition now looks broad
    walked = await every_page(populated, query, 7)

    assert walked == driven
    assert len(driven) == driven_count > 0
    assert driven == sorted(driven)  # default order is creation order
    assert await populated.count(query) == driven_count
    assert await every_page(populated, sorted_query, 7) == driven_sorted
    assert "o07" not in driven


async def test_broad_conditions_are_walked_selective_ones_drive(
        populated: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    original = planner.choose_driver

    def spy(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(result)
        return result

    monkeypatch.setattr("hie.store.sqlite.store.choose_driver", spy)
    monkeypatch.setattr(planner, "PROBE_CAP", 20)
    # status=final matches 45 (over the cap), code=c2 12: code drives
    await populated.search(QUERIES["status and code"], limit=5)
    assert seen[-1] == 1
    # status alone is broad: walk the type index for the first page
    await populated.search(QUERIES["status"], limit=5)
    assert seen[-1] == "walk"
    # a count needs every match: it never walks
    await populated.count(QUERIES["status"])
    assert seen[-1] == 0
