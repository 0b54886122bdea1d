"""Document store: the interface (:mod:`hie.store.base`) and its back ends."""

from __future__ import annotations

from hie.store.base import Store


def open_store(url: str) -> Store:
    """Return an (unopened) store for ``url``: ``sqlite:///path`` or ``mongodb://…``."""
    if url.startswith("sqlite:"):
        from hie.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("mongodb:", "mongodb+srv:")):
        from hie.store.mongo import MongoStore

        return MongoStore.from_url(url)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
