"""Usage in the store: one internal document per organisation per day.

``_Usage/{organization}|{YYYY-MM-DD}`` holds the day's totals. Adding to it is a
read-modify-write with the store's version check (``WriteRecord.version``), so
two worker processes flushing the same day at once cannot overwrite each
other: the loser gets :class:`~hie.store.base.VersionConflict` (or the MongoDB
back end's own write-conflict retry) and adds again on the fresh totals.

Each document is indexed by ``organization`` (token) and ``date`` (the day as
a date range) so administrators can list any range of days and organisations
through the ordinary store search, on either back end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any

import orjson

from hie.context import INTERNAL_SOURCE
from hie.store.base import Store, Transaction, VersionConflict, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, Cursor, DateMatch, SearchQuery, TokenMatch

USAGE_TYPE = "_Usage"
#: How often an add is re-run after losing a race with another process.
RETRIES = 20


@dataclass(slots=True)
class Usage:
    """Counts of one organisation on one day."""

    requests: int = 0
    resources_read: int = 0
    resources_written: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, other: Usage) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Usage:
        """The counts of a stored document (missing counts are 0)."""
        return cls(**{f.name: int(doc.get(f.name, 0)) for f in fields(cls)})


def usage_id(organization: str, day: date) -> str:
    """The store id of one organisation's day.

    >>> usage_id("h1", date(2026, 3, 1))
    'h1|2026-03-01'
    """
    return f"{organization}|{day.isoformat()}"


def _index(organization: str, day: date) -> IndexEntries:
    d = day.isoformat()
    return IndexEntries(token=[("organization", "", organization)],
                        date=[("date", f"{d}T00:00:00.000000", f"{d}T23:59:59.999999")])


async def add_in_tx(tx: Transaction, counts: Mapping[tuple[str, date], Usage],
                    stamp: str) -> None:
    """Add ``counts`` to the stored totals within one transaction."""
    for (org, day), usage in sorted(counts.items()):
        current = await tx.read(USAGE_TYPE, usage_id(org, day))
        total = Usage()
        version = 1
        if current is not None and not current.deleted:
            total = Usage.from_json(orjson.loads(current.body))
        if current is not None:
            version = current.version + 1
        total.add(usage)
        body = orjson.dumps({"organization": org, "date": day.isoformat(), **asdict(total)})
        await tx.put(WriteRecord(USAGE_TYPE, usage_id(org, day), version, stamp, body,
                                 source=INTERNAL_SOURCE, index=_index(org, day)))


async def add_usage(store: Store, counts: Mapping[tuple[str, date], Usage],
                    stamp: str) -> None:
    """Add ``counts`` (by organisation and day) to the store, atomically; retried
    when another process added to the same day first."""
    if not counts:
        return

    async def run(tx: Transaction) -> None:
        await add_in_tx(tx, counts, stamp)

    for attempt in range(RETRIES):
        try:
            await store.transact(run)
            return
        except VersionConflict:
            if attempt + 1 == RETRIES:
                raise


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One stored day of one organisation."""

    organization: str
    date: str
    usage: Usage

    def as_json(self) -> dict[str, Any]:
        return {"organization": self.organization, "date": self.date, **asdict(self.usage)}


class TooManyRows(ValueError):
    """The range holds more rows than one answer may carry."""


async def list_usage(store: Store, *, organization: str | None, start: date, end: date,
                     max_rows: int = 10_000, page: int = 500) -> list[DayUsage]:
    """Every stored day from ``start`` to ``end`` (inclusive), of one
    organisation or all, ordered by organisation then day."""
    where = [AnyOf((DateMatch("date", "ge", f"{start.isoformat()}T00:00:00.000000",
                              f"{start.isoformat()}T23:59:59.999999"),)),
             AnyOf((DateMatch("date", "le", f"{end.isoformat()}T00:00:00.000000",
                              f"{end.isoformat()}T23:59:59.999999"),))]
    if organization is not None:
        where.append(AnyOf((TokenMatch("organization", organization, ""),)))
    query = SearchQuery(USAGE_TYPE, tuple(where))
    rows: list[DayUsage] = []
    cursor: Cursor | None = None
    while True:
        result = await store.search(query, limit=page, cursor=cursor)
        for stored in result.resources:
            doc = orjson.loads(stored.body)
            rows.append(DayUsage(doc["organization"], doc["date"], Usage.from_json(doc)))
        if len(rows) > max_rows:
            raise TooManyRows(f"more than {max_rows} organisation-days; narrow the range")
        if result.next is None:
            break
        cursor = result.next
    rows.sort(key=lambda r: (r.organization, r.date))
    return rows


def totals(rows: list[DayUsage]) -> dict[str, Usage]:
    """The sum of ``rows`` per organisation."""
    out: dict[str, Usage] = {}
    for row in rows:
        out.setdefault(row.organization, Usage()).add(row.usage)
    return out
