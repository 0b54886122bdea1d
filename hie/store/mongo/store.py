"""The MongoDB back end of :class:`hie.store.base.Store`.

Production builds it from ``HIE_STORE_URL`` with :meth:`MongoStore.from_url`
(a PyMongo ``AsyncMongoClient``); tests inject a client, e.g. the in-memory
double of ``tests/store/mongo_double.py``, and then run this same code.

Acknowledged writes are durable and survive a primary failover: every write
runs in a transaction with write concern majority + journal. Reads outside
transactions use read concern ``majority`` (never data that could roll back).
See ``docs/store-mongodb.md`` for the document shapes, indexes and the
sharding plan.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.uri_parser import parse_uri

from hie.store.base import StoredResource, StoreUnavailable, Transaction
from hie.store.mongo import search
from hie.store.mongo.compile import doc_key, restriction_filter
from hie.store.mongo.documents import RESOURCE_FIELDS, to_stored, version_key
from hie.store.mongo.indexes import ALL_INDEXES
from hie.store.mongo.search import COUNTER_ID, Collections
from hie.store.mongo.transaction import WRITE_CONCERN, run_transaction
from hie.store.mongo.visibility import grant_members
from hie.store.query import Cursor, Page, Restriction, SearchQuery

T = TypeVar("T")

DEFAULT_DB = "hie"
_READ_CONCERN = ReadConcern("majority")


class MongoStore:
    """Versioned FHIR resources with write-time search indexes, in MongoDB.

    ``client`` is an ``AsyncMongoClient`` (or an object with the same API
    subset); the store closes it on :meth:`close` only when ``owns_client``.
    """

    def __init__(self, *, client: Any, db_name: str = DEFAULT_DB,
                 owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client
        self.db_name = db_name
        db = client.get_database(db_name)

        def col(name: str) -> Any:
            return db.get_collection(name, read_concern=_READ_CONCERN,
                                     write_concern=WRITE_CONCERN)

        self._cols = Collections(resources=col("resources"), versions=col("versions"),
                                 counters=col("counters"), locks=col("locks"))

    @classmethod
    def from_url(cls, url: str) -> MongoStore:
        """Return an unopened store for ``mongodb://host:port/dbname?…`` (db ``hie``
        when the URL names none). The client connects lazily."""
        db_name = parse_uri(url).get("database") or DEFAULT_DB
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, w="majority", journal=True, readConcernLevel="majority", tz_aware=True)
        return cls(client=client, db_name=db_name, owns_client=True)

    @property
    def client(self) -> Any:
        """The client the store talks through."""
        return self._client

    async def open(self) -> None:
        """Create the declared indexes (idempotent)."""
        by_collection: dict[str, list[IndexModel]] = {}
        for spec in ALL_INDEXES:
            options: dict[str, Any] = {"name": spec.name}
            if spec.expire_after_seconds is not None:
                options["expireAfterSeconds"] = spec.expire_after_seconds
            by_collection.setdefault(spec.collection, []).append(
                IndexModel(list(spec.keys), **options))
        try:
            for name, models in by_collection.items():
                await getattr(self._cols, name).create_indexes(models)
            await self._seed_counter()
        except ConnectionFailure as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _seed_counter(self) -> None:
        """Create the ``seq`` counter outside any transaction, so that creates only
        ever update it (no collection creation or racing upserts in transactions)."""
        # DuplicateKeyError: another process seeded it at the same moment.
        with contextlib.suppress(DuplicateKeyError):
            await self._cols.counters.update_one(
                {"_id": COUNTER_ID}, {"$setOnInsert": {"n": 0}}, upsert=True)

    async def close(self) -> None:
        """Close the client when the store created it."""
        if self._owns_client:
            await self._client.close()

    async def ping(self) -> bool:
        """Return True when the server answers ``ping``."""
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def transact(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction, re-running it on write conflicts."""
        return await run_transaction(self._client, self._cols, fn)

    async def read(self, resource_type: str, id: str, *,
                   restriction: Restriction | None = None) -> StoredResource | None:
        """Return the current version (a tombstone if deleted) or None."""
        doc = await self._guard(self._cols.resources.find_one(
            {"_id": doc_key(resource_type, id),
             **restriction_filter(restriction, resource_type)},
            RESOURCE_FIELDS))
        return to_stored(doc) if doc else None

    async def read_version(self, resource_type: str, id: str, version: int, *,
                           restriction: Restriction | None = None) -> StoredResource | None:
        """Return one version (possibly a tombstone) or None.

        Visible by the version's own source and labels; a grant decides its
        patient by the current document of the resource (see :mod:`.visibility`).
        """
        members = await self._guard(grant_members(
            self._cols, restriction, {"_id": doc_key(resource_type, id)}, resource_type))
        doc = await self._guard(self._cols.versions.find_one(
            {"_id": version_key(resource_type, id, int(version)),
             **restriction_filter(restriction, resource_type, members=members)}))
        return to_stored(doc) if doc else None

    async def read_many(self, keys: Iterable[tuple[str, str]], *,
                        restriction: Restriction | None = None) -> list[StoredResource]:
        """Return the current, non-deleted versions of those that exist."""
        ids = sorted({doc_key(t, i) for t, i in keys})
        if not ids:
            return []
        flt = {"_id": {"$in": ids}, "deleted": False, **restriction_filter(restriction)}
        docs = await self._guard(self._cols.resources.find(flt, RESOURCE_FIELDS).to_list())
        return [to_stored(d) for d in docs]

    async def search(self, query: SearchQuery, *, limit: int,
                     cursor: Cursor | None = None) -> Page:
        """Return one page of ``query`` (keyset on seq, or offset under a snapshot)."""
        return await self._guard(search.search(self._cols, query, limit=limit, cursor=cursor))

    async def count(self, query: SearchQuery) -> int:
        """Return how many current, non-deleted resources match ``query``."""
        return await self._guard(search.count(self._cols, query))

    async def history(
        self, *, resource_type: str | None = None, id: str | None = None,
        since: str | None = None, before: str | None = None,
        limit: int, offset: int = 0, restriction: Restriction | None = None,
    ) -> tuple[list[StoredResource], int]:
        """Return versions newest first and the total number that match.

        ``since`` is inclusive, ``before`` exclusive; the restriction applies to
        each version (its own source and labels; a grant's patients are those
        of the resource's current document, see :mod:`.visibility`).
        """
        if id is not None and resource_type is None:
            raise ValueError("history of one id needs its resource type")
        flt: dict[str, Any] = {}
        scope: dict[str, Any] = {}
        if resource_type is not None:
            flt["type"] = scope["type"] = resource_type
            if id is not None:
                flt["id"] = id
                scope = {"_id": doc_key(resource_type, id)}
        lu: dict[str, str] = {}
        if since is not None:
            lu["$gte"] = since
        if before is not None:
            lu["$lt"] = before
        if lu:
            flt["lu"] = lu
        members = await self._guard(grant_members(self._cols, restriction, scope,
                                                   resource_type))
        flt.update(restriction_filter(restriction, resource_type, members=members))
        if id is not None and resource_type is not None:
            order = [("version", -1)]
        else:
            order = [("lu", -1), ("seq", -1), ("version", -1)]
        total = await self._guard(self._cols.versions.count_documents(flt))
        if limit <= 0 or offset >= total:
            return [], total
        docs = await self._guard(self._cols.versions.find(flt).sort(order).skip(
            max(offset, 0)).limit(limit).to_list())
        return [to_stored(d) for d in docs], total

    async def max_seq(self) -> int:
        """Return the highest ``seq`` assigned so far (0 when empty)."""
        return await self._guard(search.max_seq(self._cols))

    @staticmethod
    async def _guard(op: Awaitable[T]) -> T:
        """Await ``op``, reporting an unreachable server as :class:`StoreUnavailable`."""
        try:
            return await op
        except ConnectionFailure as exc:
            raise StoreUnavailable(str(exc)) from exc
