"""The embedded SQLite back end of the document store (the default).

One file in WAL mode with ``synchronous=FULL``: readers never block the writer,
and a write is on disk before it is acknowledged. Search indexes are rows of
one table per index kind whose primary keys are composite indexes, so every
supported condition, sort, count and restriction is answered from indexes
(``tests/store/test_sqlite_query_plans.py`` checks it with ``EXPLAIN QUERY
PLAN``).

Modules: :mod:`.schema` (tables, versioned upgrades, connection settings),
:mod:`.conditions` and :mod:`.compile` (``SearchQuery`` → SQL), :mod:`.restriction`
(what a caller may see, grants included, as SQL on a row), :mod:`.planner`
(which condition drives, by probing), :mod:`.records` and :mod:`.writes`
(reading and writing versions on a connection), :mod:`.store` (the async store:
threads, transactions).
"""

from hie.store.sqlite.compile import Statement, compile_count, compile_probes, compile_search
from hie.store.sqlite.store import SQLiteStore, SQLiteTransaction

__all__ = ["SQLiteStore", "SQLiteTransaction", "Statement", "compile_count", "compile_probes",
           "compile_search"]
