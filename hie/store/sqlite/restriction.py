"""The caller's :class:`~hie.store.query.Restriction` as SQL on one row.

The restriction is part of every statement that reads records (search, count,
chain targets, read, vread, read_many, history), so a hidden record can never
be counted, paged over or included. A record is visible when it passes the
base rule or any grant opens it; on a ``resources`` or ``versions`` row
``{a}`` that compiles to::

    {a}.source IN (<base sources> ∪ <every grant's sources>)   -- see below
    AND (    ({a}.source IN (<sources>) AND <no hidden label>)  -- the base rule
         OR (    ({a}.source IN (<grant sources>) AND <no grant label>
                  [AND {a}.type IN (<grant types>)])            -- a "gate"
              AND (   [{a}.type = 'Patient' AND] {a}.id IN (<patients>)
                   OR EXISTS (SELECT 1 FROM idx_reference g
                              WHERE g.seq = {a}.seq
                                AND +g.param IN (<params>)
                                AND g.target_type = 'Patient'
                                AND g.target_id IN (<patients>))))
         OR …)

* Nothing here drives a statement or scans: the search conditions pick the
  candidates and the restriction filters them, with tests on the row itself
  and at most one probe per row of the ``(seq, param)`` index of
  ``idx_reference`` (``+`` on ``param``: the row's few reference entries are
  read through ``seq`` once, instead of one probe per granted parameter).
* The leading source test is redundant but has no subquery, so SQLite checks
  it before any term that probes an index: rows of organisations nobody
  granted cost nothing more. Inside, the cheap gate comes before the probe, so
  the caller's own records and rows no gate admits are never probed.
* Grants are normalised first: grants alike but for their patients become one
  (patients joined); grants naming the same patients and parameters share one
  membership test, with their gates OR-ed (a consent, a break-the-glass window
  and a consultation for one person cost one probe, not three).
* Known resource type (a search, a chain target, a read, a type's history):
  grants whose ``types`` exclude it, or that name no parameter for a
  non-Patient type, are left out; the type tests disappear.
* A search whose own conditions already put every match with the granted
  patients through granted parameters (``subject=Patient/<linked ids>``, the
  consent gate's usual search) needs no membership test at all
  (:func:`implied_patients`): the grant then costs what the base rule costs.
* ``versions`` rows carry the ``seq`` of their resource, so an old version's
  patient is decided by the *current* index rows of its resource — the only
  ones kept. Its own source and labels still decide the rest. A deleted
  resource has no index rows: its versions are opened by no grant (except a
  Patient's, which belongs by its id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hie.store.query import AnyOf, Grant, ReferenceMatch, Restriction

PATIENT = "Patient"


@dataclass(frozen=True, slots=True)
class _Gate:
    """The per-row tests of one grant besides its patients."""

    sources: frozenset[str]
    hidden_labels: frozenset[str]
    types: frozenset[str] | None


#: ``(param, Patient id)`` pairs of which every row tested has at least one
#: among its reference entries (a search condition ``subject=Patient/1,…``).
Implied = frozenset[tuple[str, str]]


def implied_patients(where: tuple[AnyOf, ...]) -> list[Implied]:
    """What the conditions of a search already guarantee about each match's
    patient: one :data:`Implied` per group made only of typed Patient references."""
    found: list[Implied] = []
    for group in where:
        terms = group.terms
        if terms and all(isinstance(t, ReferenceMatch) and t.target_type == PATIENT
                         for t in terms):
            found.append(frozenset((t.param, t.target_id) for t in terms
                                   if isinstance(t, ReferenceMatch)))
    return found


def restriction_sql(alias: str, restriction: Restriction | None, rtype: str | None = None, *,
                    implied: Sequence[Implied] = ()) -> tuple[str, list[Any]]:
    """The visibility test of ``restriction`` on the row ``alias`` (of type
    ``rtype`` when known, else any type); ``"1"``/``"0"`` when constant.

    ``implied``: when the search's own conditions already place every row
    with the granted patients through granted parameters (the consent gate's
    usual ``subject=Patient/<linked ids>``), the grant needs no membership
    test at all and costs what the base rule costs.

    """
    if restriction is None:
        return "1", []
    base, params = _base(alias, restriction)
    if base == "1":  # everything passes the base rule: grants add nothing
        return "1", []
    terms = [base] if base != "0" else []
    groups = _groups(restriction.grants, rtype)
    for (patients, grant_params), gates in groups.items():
        belongs = any(refs and all(p in grant_params and i in patients for p, i in refs)
                      for refs in implied)
        sql, gparams = _group(alias, patients, grant_params, gates, rtype, belongs)
        terms.append(sql)
        params += gparams
    if not terms:
        return "0", []
    if len(terms) == 1:
        return terms[0], params
    either = "(" + " OR ".join(f"({t})" for t in terms) + ")"
    if restriction.sources is None:
        return either, params
    # Redundant, but a plain column test: SQLite checks it before any term
    # with a subquery, so rows of organisations nobody granted are dropped
    # before a search condition or a grant probes an index for them.
    sources = sorted(restriction.sources.union(
        *(gate.sources for gates in groups.values() for gate in gates)))
    return f"{_in(f'{alias}.source', len(sources))} AND {either}", [*sources, *params]


def _groups(grants: tuple[Grant, ...], rtype: str | None,
            ) -> dict[tuple[frozenset[str], frozenset[str]], list[_Gate]]:
    """The grants that can open a row of ``rtype``, normalised so that each
    row costs at most one membership test per distinct set of patients:
    grants alike but for their patients become one (their patients joined),
    then grants naming the same patients and parameters share the test."""
    joined: dict[tuple[_Gate, frozenset[str]], set[str]] = {}
    for grant in grants:
        if not grant.sources or not grant.patients:
            continue
        if grant.types is not None and (not grant.types
                                        or (rtype is not None and rtype not in grant.types)):
            continue
        if not grant.params and rtype not in (None, PATIENT):
            continue  # only Patient resources belong without a reference
        gate = _Gate(grant.sources, grant.hidden_labels,
                     grant.types if rtype is None else None)
        joined.setdefault((gate, grant.params), set()).update(grant.patients)
    groups: dict[tuple[frozenset[str], frozenset[str]], list[_Gate]] = {}
    for (gate, grant_params), patients in joined.items():
        gates = groups.setdefault((frozenset(patients), grant_params), [])
        if gate not in gates:
            gates.append(gate)
    return groups


def _base(alias: str, restriction: Restriction) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    if restriction.sources is not None:
        if not restriction.sources:
            return "0", []
        terms.append(_in(f"{alias}.source", len(restriction.sources)))
        params += sorted(restriction.sources)
    labels, lparams = _no_label(alias, restriction.hidden_labels)
    if labels:
        terms.append(labels)
        params += lparams
    return (" AND ".join(terms) or "1"), params


def _group(alias: str, patient_set: frozenset[str], grant_params: frozenset[str],
           gates: list[_Gate], rtype: str | None, belongs: bool) -> tuple[str, list[Any]]:
    """``(<gate> OR <gate> …) AND <belongs to the patients>``: the cheap tests
    on the row first, the index probe only for rows that pass one."""
    gate_terms: list[str] = []
    params: list[Any] = []
    for gate in gates:
        terms = [_in(f"{alias}.source", len(gate.sources))]
        params += sorted(gate.sources)
        labels, lparams = _no_label(alias, gate.hidden_labels)
        if labels:
            terms.append(labels)
            params += lparams
        if gate.types is not None:
            terms.append(_in(f"{alias}.type", len(gate.types)))
            params += sorted(gate.types)
        gate_terms.append(" AND ".join(terms))
    gate_sql = gate_terms[0] if len(gate_terms) == 1 else (
        "(" + " OR ".join(f"({t})" for t in gate_terms) + ")")
    if belongs:
        return gate_sql, params
    patients = sorted(patient_set)
    members: list[str] = []
    if rtype is None or rtype == PATIENT:
        itself = _in(f"{alias}.id", len(patients))
        if rtype is None:
            itself = f"{alias}.type = ? AND {itself}"
            params.append(PATIENT)
        members.append(itself)
        params += patients
    if grant_params:
        g = f"{alias}_g"
        # '+': read the row's few reference entries through (seq) once
        # rather than probing (seq, param) once per granted parameter
        members.append(
            f"EXISTS (SELECT 1 FROM idx_reference {g} WHERE {g}.seq = {alias}.seq "
            f"AND +{_in(f'{g}.param', len(grant_params))} AND {g}.target_type = ? "
            f"AND {_in(f'{g}.target_id', len(patients))})")
        params += [*sorted(grant_params), PATIENT, *patients]
    member_sql = members[0] if len(members) == 1 else f"({' OR '.join(members)})"
    return f"{gate_sql} AND {member_sql}", params


def _no_label(alias: str, hidden: frozenset[str]) -> tuple[str, list[Any]]:
    """None of ``hidden`` among the row's labels (``|code|code|`` or NULL, so
    a hidden code is a substring test)."""
    if not hidden:
        return "", []
    tests = " AND ".join(f"instr({alias}.labels, ?) = 0" for _ in hidden)
    return f"({alias}.labels IS NULL OR ({tests}))", [f"|{code}|" for code in sorted(hidden)]


def _in(column: str, n: int) -> str:
    return f"{column} = ?" if n == 1 else f"{column} IN ({', '.join('?' * n)})"
