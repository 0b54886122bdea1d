"""The document store interface.

The core owns this interface (the Orthanc pattern); back ends live beside it in
``hie/store/sqlite`` and ``hie/store/mongo`` and are chosen from
``HIE_STORE_URL`` by :func:`hie.store.open_store`. Domain code only ever sees
:class:`Store` and :class:`Transaction`.

Resources are kept as their JSON bytes (with ``id`` and ``meta`` already set by
the FHIR layer) so that reads hand the stored bytes straight to the client.
Every version is kept (history); the current version of each resource carries
its search index entries. Deletes write a tombstone version (``deleted=True``,
empty body) and drop the index entries.

Every resource gets a store-wide, strictly increasing sequence number (``seq``)
when it is first created; it never changes and orders default search results,
so keyset paging stays stable while data is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from hie.store.index import IndexEntries
from hie.store.query import Cursor, Page, Restriction, SearchQuery

T = TypeVar("T")


class StoreError(Exception):
    """Base class of store errors."""


class VersionConflict(StoreError):
    """A write raced another write of the same resource (or the expected
    version did not match); the caller may re-read and retry."""


class StoreUnavailable(StoreError):
    """The back end cannot be reached."""


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated: str  # fixed-width UTC, see hie.store.index
    deleted: bool
    body: bytes  # JSON; b"" for a tombstone
    source: str | None = None  # meta.source of the version (calling organisation)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One new version to write.

    ``version`` is the new version number (1 for a create). The store refuses it
    with :class:`VersionConflict` when the current version is not
    ``version - 1`` (0: the resource must not exist yet), which makes
    read-modify-write race-safe. ``index`` is ``None`` for a tombstone.
    """

    resource_type: str
    id: str
    version: int
    last_updated: str
    body: bytes
    deleted: bool = False
    source: str | None = None
    index: IndexEntries | None = None


class Transaction(Protocol):
    """Reads and writes that commit together or not at all.

    Reads see the transaction's own writes. ``lock(key)`` serialises
    transactions that name the same key (used by conditional create/update so
    that parallel identical requests cannot both create).
    """

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        """Return the current version (a tombstone if deleted), or None."""
        ...

    async def search_keys(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        """Return up to ``limit`` (type, id) of current resources matching ``query``."""
        ...

    async def lock(self, key: str) -> None:
        """Hold ``key`` until the transaction ends."""
        ...

    async def put(self, record: WriteRecord) -> int:
        """Write a new version; return the resource's ``seq``."""
        ...

    async def put_many(self, records: Sequence[WriteRecord]) -> list[int]:
        """Write several new versions in order, as ``put`` would one by one;
        return their ``seq``. A back end may batch them (fewer round trips)."""
        ...


class Store(Protocol):
    """A document store for versioned FHIR resources with search indexes."""

    async def open(self) -> None:
        """Connect, create or upgrade the schema and indexes."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> bool:
        """Return True when the back end answers."""
        ...

    async def transact(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn`` in one atomic transaction and return its result.

        ``fn`` may be run more than once (a back end retries transient
        conflicts), so it must not have side effects outside the transaction.
        Any exception raised by ``fn`` aborts the transaction and propagates.
        """
        ...

    async def read(
        self, resource_type: str, id: str, *, restriction: Restriction | None = None
    ) -> StoredResource | None:
        """Return the current version (a tombstone if deleted) or None.
        With a restriction, a resource the caller may not see is None."""
        ...

    async def read_version(
        self, resource_type: str, id: str, version: int, *,
        restriction: Restriction | None = None,
    ) -> StoredResource | None:
        """Return one version (possibly a tombstone) or None."""
        ...

    async def read_many(
        self, keys: Iterable[tuple[str, str]], *, restriction: Restriction | None = None
    ) -> list[StoredResource]:
        """Return the current, non-deleted versions of those that exist (any order)."""
        ...

    async def search(
        self, query: SearchQuery, *, limit: int, cursor: Cursor | None = None
    ) -> Page:
        """Return one page of current, non-deleted resources matching ``query``,
        in ``query.sort`` order (default: ``seq`` ascending), and the cursor
        of the next page if there may be one."""
        ...

    async def count(self, query: SearchQuery) -> int:
        """Return how many current, non-deleted resources match ``query``."""
        ...

    async def history(
        self, *, resource_type: str | None = None, id: str | None = None,
        since: str | None = None, before: str | None = None,
        limit: int, offset: int = 0, restriction: Restriction | None = None,
    ) -> tuple[list[StoredResource], int]:
        """Return versions newest first (of one resource, one type, or all) and
        the total number of versions that match."""
        ...

    async def max_seq(self) -> int:
        """Return the highest ``seq`` assigned so far (0 when empty)."""
        ...
