"""The FHIR R4 search parameters the exchange serves, as a data table.

The write path indexes exactly these (``hie.fhir.search.extract``), the search
parser accepts exactly these (``hie.fhir.search.parse``), and the
CapabilityStatement lists exactly these — one table keeps the three honest.
``_id`` and ``_lastUpdated`` are not in the table: the store keeps a resource's
id and last-updated instant itself, so they are handled specially.

>>> get_param("Observation", "code").type
'token'
>>> get_param("Observation", "patient").targets
('Patient',)
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas._search_parameters_data import META_ROWS, PATIENT_COMPARTMENT_ROWS, ROWS

PARAM_TYPES = frozenset({"token", "string", "date", "reference", "quantity", "number", "uri"})


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type.

    ``paths`` are element paths from the resource root (``Observation.code``,
    ``Observation.effective[x]``, ``Patient.telecom.where(system='phone')``).
    ``targets`` are the types a reference parameter may point to; empty means
    any type (FHIR's ``Any``) and is always empty for non-reference types.
    """

    name: str
    type: str
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()

    def can_target(self, resource_type: str) -> bool:
        """Whether this reference parameter may point at ``resource_type``."""
        return not self.targets or resource_type in self.targets


def _build() -> dict[str, dict[str, SearchParam]]:
    table: dict[str, dict[str, SearchParam]] = {}
    for rtype, rows in ROWS.items():
        by_name: dict[str, SearchParam] = {}
        for name, ptype, paths, targets in [*rows, *META_ROWS]:
            if ptype not in PARAM_TYPES:  # pragma: no cover - guards the data file
                raise ValueError(f"{rtype}.{name}: unknown type {ptype}")
            by_name[name] = SearchParam(
                name=name, type=ptype,
                paths=tuple(f"{rtype}.{p.strip()}" for p in paths.split("|")),
                targets=tuple(targets.split()))
        table[rtype] = by_name
    return table


_TABLE = _build()

#: For each served type, the reference parameters that put a resource into a
#: Patient's compartment (FHIR R4 CompartmentDefinition ``patient``); ``()``
#: for types outside the compartment.
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = dict(PATIENT_COMPARTMENT_ROWS)

#: The resource types this table describes.
SEARCHABLE_TYPES: frozenset[str] = frozenset(_TABLE)


def params_for(resource_type: str) -> list[SearchParam]:
    """Every search parameter of ``resource_type`` (empty for unknown types)."""
    return list(_TABLE.get(resource_type, {}).values())


def get_param(resource_type: str, name: str) -> SearchParam | None:
    """The parameter ``name`` of ``resource_type``, or ``None``."""
    params = _TABLE.get(resource_type)
    return None if params is None else params.get(name)
