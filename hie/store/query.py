"""The store's query language: a back-end-neutral description of a search.

``hie.fhir.search`` parses FHIR search parameters into a :class:`SearchQuery`;
each back end compiles it into its own query (SQL for SQLite, a filter document
for MongoDB) that runs on the write-time indexes of :mod:`hie.store.index`.

A query is a conjunction (``where``: AND) of disjunctions (:class:`AnyOf`: OR,
from comma-separated values) of conditions. Each condition names one search
parameter and how its indexed values must match. Dates use the fixed-width
strings of :mod:`hie.store.index`.

Prefix semantics (FHIR R4 §3.1.1.4), for a resource value ``[tlo, thi]`` and a
search value ``[slo, shi]``:

=====  =====================================  =====================================
prefix dates (ranges)                          numbers / quantities (point ``v``)
=====  =====================================  =====================================
eq     ``tlo >= slo and thi <= shi``           ``slo <= v < shi``
ne     not eq                                  not eq
gt     ``thi > shi``                           ``v > value``
lt     ``tlo < slo``                           ``v < value``
ge     ``thi >= slo``                          ``v >= value``
le     ``tlo <= shi``                          ``v <= value``
sa     ``tlo > shi``                           ``v > value``
eb     ``thi < slo``                           ``v < value``
ap     ranges overlap ``[slo-10%, shi+10%]``   ``|v - value| <= 10% of |value|``
=====  =====================================  =====================================

For ``ap`` on dates the FHIR layer widens ``low``/``high`` itself and sends
``ap``; the back end then applies the overlap test ``tlo <= high and thi >= low``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
IndexKind = Literal["token", "string", "date", "number", "quantity", "reference", "uri"]


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """``param=[system|]code``. ``system=None``: any system; ``""``: no system.
    ``code=None``: any code of ``system`` (``system|``). ``negate``: ``:not``,
    i.e. resources with no value matching (including those with no value)."""

    param: str
    code: str | None
    system: str | None = None
    negate: bool = False


@dataclass(frozen=True, slots=True)
class StringMatch:
    """``start`` and ``contains`` compare the normalised form (the FHIR layer
    normalises ``value`` the same way); ``exact`` compares the exact form."""

    param: str
    value: str
    mode: Literal["start", "exact", "contains"] = "start"


@dataclass(frozen=True, slots=True)
class DateMatch:
    param: str
    prefix: Prefix
    low: str
    high: str


@dataclass(frozen=True, slots=True)
class NumberMatch:
    param: str
    prefix: Prefix
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityMatch:
    """Like :class:`NumberMatch`; ``system``/``code`` of ``None`` match any."""

    param: str
    prefix: Prefix
    value: float
    low: float
    high: float
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceMatch:
    """A local reference ``target_type/target_id`` (``target_type=None``: any
    type with that id), or an absolute reference with ``target_type=""``."""

    param: str
    target_id: str
    target_type: str | None = None


@dataclass(frozen=True, slots=True)
class UriMatch:
    """``exact``; ``below``: the indexed uri starts with ``value``; ``above``:
    ``value`` starts with the indexed uri."""

    param: str
    value: str
    mode: Literal["exact", "below", "above"] = "exact"


@dataclass(frozen=True, slots=True)
class MissingMatch:
    """``param:missing=true|false`` — whether the resource has any value."""

    param: str
    kind: IndexKind
    missing: bool


@dataclass(frozen=True, slots=True)
class IdMatch:
    """``_id`` — one of these logical ids."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LastUpdatedMatch:
    """``_lastUpdated`` with date-prefix semantics; the resource value is the
    instant of its current version (``tlo == thi``)."""

    prefix: Prefix
    low: str
    high: str


@dataclass(frozen=True, slots=True)
class ChainMatch:
    """One level of chaining: the resource's reference ``param`` points at a
    ``target_type`` resource that satisfies ``inner`` (e.g.
    ``subject:Patient.identifier=sys|val``)."""

    param: str
    target_type: str
    inner: Condition


Condition: TypeAlias = (
    TokenMatch | StringMatch | DateMatch | NumberMatch | QuantityMatch | ReferenceMatch
    | UriMatch | MissingMatch | IdMatch | LastUpdatedMatch | ChainMatch
)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A disjunction: comma-separated values of one parameter."""

    terms: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class SortKey:
    """Sort by a search parameter's smallest (ascending) or largest
    (descending) value; ``param`` may be ``_id`` or ``_lastUpdated``.
    Resources with no value sort last."""

    param: str
    kind: IndexKind
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """Records of other organisations opened to a caller for some patients: a
    consent decision, a break-the-glass window or a consultation, compiled.

    A resource is visible through a grant when all of these hold:

    * it belongs to one of ``patients`` (Patient resource ids — every Patient
      linked to the regional person): it is one of those Patient resources, or
      one of its reference index entries whose parameter is in ``params`` points
      at ``Patient/<one of patients>`` (target type ``"Patient"``);
    * its ``source`` is in ``sources``;
    * none of its ``_security`` codes is in ``hidden_labels``;
    * its type is in ``types`` (``None``: any type).
    """

    patients: frozenset[str]
    sources: frozenset[str]
    params: frozenset[str]
    hidden_labels: frozenset[str] = frozenset()
    types: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Restriction:
    """What one caller may see (the consent decision, compiled).

    A record is visible when it passes the base rule — its ``source`` is in
    ``sources`` (``None``: no limit) and none of its ``meta.security`` codes
    (indexed as the token parameter ``_security``, system ignored) is in
    ``hidden_labels`` — or when any of ``grants`` opens it (a grant may open a
    record the base rule hides).
    """

    sources: frozenset[str] | None = None
    hidden_labels: frozenset[str] = frozenset()
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchQuery:
    resource_type: str
    where: tuple[AnyOf, ...] = ()
    sort: tuple[SortKey, ...] = ()
    restriction: Restriction | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts. Default order (no ``sort``): keyset on the store's
    insertion sequence ``after_seq`` (stable while data is written: new resources
    come after, nothing shifts). With ``sort``: ``offset`` into the results among
    resources whose sequence is at most ``snapshot_seq`` (new resources are left
    out so later pages do not shift)."""

    after_seq: int = 0
    offset: int = 0
    snapshot_seq: int | None = None


@dataclass(slots=True)
class Page:
    resources: list  # list[StoredResource]
    next: Cursor | None = None
    # the highest sequence number seen when the first page was taken
    snapshot_seq: int | None = None
    extra: dict = field(default_factory=dict)
