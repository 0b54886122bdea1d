"""The indexes every query of the MongoDB back end relies on.

Each compiled condition is an ``$elemMatch`` on one embedded array with an
equality on the parameter name ``p``; the compound multikey indexes below put
``type`` and ``<array>.p`` first and the compared value next, so each condition
is answered by an index range scan. ``$elemMatch`` lets MongoDB compound the
bounds of fields of the same array element (``dt.lo`` *and* ``dt.hi``).

``tests/store/test_mongo_indexes.py`` checks that every field path a compiled
filter uses is served by one of these indexes. :meth:`MongoStore.open` creates
them (idempotently: same name, same keys).
"""

from __future__ import annotations

from dataclasses import dataclass

ASC, DESC = 1, -1


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One declared index: its collection, name, keys and options."""

    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    expire_after_seconds: int | None = None


def _r(name: str, *keys: tuple[str, int]) -> IndexSpec:
    return IndexSpec("resources", name, keys)


RESOURCE_INDEXES: tuple[IndexSpec, ...] = (
    # Default order and keyset paging: type, not deleted, seq.
    _r("type_seq", ("type", ASC), ("deleted", ASC), ("seq", ASC)),
    _r("lastupdated", ("type", ASC), ("lu", ASC)),
    # token: code (with or without system), and system| (any code).
    _r("tok_code", ("type", ASC), ("tok.p", ASC), ("tok.c", ASC), ("tok.s", ASC)),
    _r("tok_system", ("type", ASC), ("tok.p", ASC), ("tok.s", ASC), ("tok.c", ASC)),
    # string: start/contains on the normalised form, :exact on the exact form.
    _r("str_norm", ("type", ASC), ("str.p", ASC), ("str.n", ASC)),
    _r("str_exact", ("type", ASC), ("str.p", ASC), ("str.e", ASC)),
    # dates: ranges (lo, hi) of one element.
    _r("dt_range", ("type", ASC), ("dt.p", ASC), ("dt.lo", ASC), ("dt.hi", ASC)),
    _r("dt_high", ("type", ASC), ("dt.p", ASC), ("dt.hi", ASC)),
    _r("num_value", ("type", ASC), ("num.p", ASC), ("num.v", ASC)),
    _r("qty_value", ("type", ASC), ("qty.p", ASC), ("qty.v", ASC), ("qty.c", ASC), ("qty.s", ASC)),
    _r("qty_code", ("type", ASC), ("qty.p", ASC), ("qty.c", ASC), ("qty.v", ASC)),
    # references: by target id (then type), also for chains ($in of target ids)
    # and _revinclude.
    _r("ref_target", ("type", ASC), ("ref.p", ASC), ("ref.i", ASC), ("ref.t", ASC)),
    # a grant's patients across all types: which resources belong to them, for
    # the system history of a caller with grants (see visibility.py)
    _r("ref_patient", ("ref.i", ASC), ("ref.t", ASC), ("ref.p", ASC)),
    _r("uri_value", ("type", ASC), ("uri.p", ASC), ("uri.u", ASC)),
)

VERSION_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec("versions", "resource_history",
              (("type", ASC), ("id", ASC), ("version", DESC))),
    IndexSpec("versions", "type_history",
              (("type", ASC), ("lu", DESC), ("seq", DESC), ("version", DESC))),
    IndexSpec("versions", "all_history", (("lu", DESC), ("seq", DESC), ("version", DESC))),
)

# Lock documents only matter while their transaction runs; expire them later.
LOCK_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec("locks", "expire", (("at", ASC),), expire_after_seconds=24 * 3600),
)

ALL_INDEXES: tuple[IndexSpec, ...] = RESOURCE_INDEXES + VERSION_INDEXES + LOCK_INDEXES
