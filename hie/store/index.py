"""Search index entries extracted from a resource at write time.

The FHIR layer computes these (``hie.fhir.search.extract``) and hands them to the
store with each write; the store keeps them beside the current version so that
every supported search is answered from indexes, never by scanning bodies.

Value conventions (shared by every back end):

* dates are fixed-width UTC strings ``YYYY-MM-DDTHH:MM:SS.ffffff`` so that string
  order is time order; a value is a closed range ``[low, high]`` (a partial date
  ``2024-03`` is ``2024-03-01T00:00:00.000000`` .. ``2024-03-31T23:59:59.999999``;
  an open period end is ``DATE_MIN`` / ``DATE_MAX``);
* numbers and quantities carry the stated value and the range its precision
  implies (``5.4`` → ``[5.35, 5.45)``);
* token systems are ``""`` when the element has no system;
* strings keep a normalised form (case and accents folded, for default and
  ``:contains`` matching) and the exact form (for ``:exact``);
* references are split into target type and id for local references
  (``Patient/123``); other references keep type ``""`` and the whole reference as id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATE_MIN = "0001-01-01T00:00:00.000000"
DATE_MAX = "9999-12-31T23:59:59.999999"


@dataclass(slots=True)
class IndexEntries:
    """Every search-parameter value of one resource version, by parameter type."""

    # (param, system, code)
    token: list[tuple[str, str, str]] = field(default_factory=list)
    # (param, normalised, exact)
    string: list[tuple[str, str, str]] = field(default_factory=list)
    # (param, low, high)
    date: list[tuple[str, str, str]] = field(default_factory=list)
    # (param, value, low, high)
    number: list[tuple[str, float, float, float]] = field(default_factory=list)
    # (param, value, low, high, system, code)
    quantity: list[tuple[str, float, float, float, str, str]] = field(default_factory=list)
    # (param, target_type, target_id)
    reference: list[tuple[str, str, str]] = field(default_factory=list)
    # (param, uri)
    uri: list[tuple[str, str]] = field(default_factory=list)

    def params(self) -> set[str]:
        """Names of the parameters that have at least one value."""
        names: set[str] = set()
        for rows in (self.token, self.string, self.date, self.number, self.quantity,
                     self.reference, self.uri):
            names.update(r[0] for r in rows)
        return names
