"""The consent decision: what one requester may see of one patient's records.

Pure: no store, no clock, no network. The caller passes the patient's consents
and consultations and ``now``; the same inputs always give the same answer.

How it decides. Records of other hospitals are split into *cells* — (which
hospital holds it, its resource type, its sensitivity label or none) — with
one cell for every hospital, type and label a rule names and one for "any
other". Each grant decides cells:

* a **consent** decides a cell through its provision tree: the deepest
  applicable provision covering the cell decides (a nested provision is an
  exception to its parent; among siblings deny wins). A permit decides a
  labelled cell only when it lists that label explicitly: sensitive categories
  stay hidden unless opened. Across consents deny wins; no decision is deny.
* **break-the-glass** (``ETREAT`` with a reason) permits every unlabelled cell,
  except where the patient recorded a deny that names ``ETREAT`` explicitly.
* an open, approved **consultation** the request names permits its scope.

A cell is visible if any grant permits it. The visible cells are then narrowed
to the product the exchange enforces — hospitals × resource types × labels —
taking only what every chosen hospital and type allows, so the answer never
shows more than the grants do. See ``docs/consent.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from consent.policy import ConsentError, Policy, Provision, parse_consent
from schemas.consent import (
    ETREAT,
    MASK_RESIDENT_ID,
    Basis,
    Consultation,
    DecisionRequest,
    DecisionResponse,
)
from schemas.resource_types import RESOURCE_TYPES
from schemas.sensitivity import BY_CODE, SENSITIVE_CODES

#: "Any other hospital / resource type": a cell key no named rule matches.
OTHER = None
_LABELS: tuple[str | None, ...] = (None, *sorted(SENSITIVE_CODES))
_PURPOSES = {"TREAT": "treatment", "ETREAT": "emergency treatment",
             "HPAYMT": "payment", "HOPERAT": "operations", "HRESCH": "research",
             "PATRQT": "the patient's request", "CAREMGT": "care management"}

Cell = tuple[str | None, str | None, str | None]  # (custodian, resource type, label)


@dataclass(slots=True)
class _Grants:
    """What the evaluation found: deciding provisions per cell, and more."""

    permit: dict[Cell, list[tuple[Policy | None, Provision | None, str]]] = field(
        default_factory=dict)
    deny: dict[Cell, list[tuple[Policy, Provision]]] = field(default_factory=dict)
    ends: list[datetime] = field(default_factory=list)
    basis: list[Basis] = field(default_factory=list)


def _label_names(labels: Iterable[str]) -> str:
    return ", ".join(BY_CODE[c].name_en for c in sorted(labels))


def describe(provision: Provision) -> str:
    """A provision in words, for patients and privacy officers."""
    who = ", ".join(provision.name(k) for k in sorted(
        provision.organizations | provision.practitioners)) or "everyone"
    if provision.labels is not None:
        what = f"{_label_names(provision.labels)} records"
    else:
        what = "records"
    if provision.classes is not None:
        what += f" of type {', '.join(sorted(provision.classes))}"
    if provision.custodians is not None:
        what += f" held by {', '.join(provision.name(c) for c in sorted(provision.custodians))}"
    why = ""
    if provision.purposes is not None:
        why = " for " + ", ".join(_PURPOSES.get(p, p) for p in sorted(provision.purposes))
    when = ""
    if provision.start is not None:
        when += f" from {provision.start.date().isoformat()}"
    if provision.until is not None:
        last = provision.until - timedelta(microseconds=1)
        when += f" until {last.date().isoformat()}"
    excepts = [c for c in provision.children if c.effect == "deny" and c.labels is not None]
    if provision.effect == "permit":
        if excepts:
            why += " except " + _label_names(set().union(*(c.labels or () for c in excepts)))
        return f"Patient allowed {who} to see {what}{why}{when}"
    return f"Patient refused {who} access to {what}{why}{when}"


def _tree(node: Provision, cell: Cell, applies: dict[int, bool],
          explicit: frozenset[str] | None) -> tuple[str, list[Provision]] | None:
    """The effect a provision subtree gives a cell, and the deciding provisions."""
    if not applies[id(node)] or not node.covers(*cell):
        return None
    explicit = node.labels if node.labels is not None else explicit
    found = [r for child in node.children if (r := _tree(child, cell, applies, explicit))]
    if found:
        denies = [p for effect, ps in found if effect == "deny" for p in ps]
        if denies:
            return "deny", denies
        return "permit", [p for _, ps in found for p in ps]
    label = cell[2]
    if node.effect == "permit" and label is not None and (explicit is None
                                                          or label not in explicit):
        return None  # a sensitive category stays hidden unless opened explicitly
    return node.effect, [node]


def _consents(policies: Sequence[Policy], request: DecisionRequest, now: datetime,
              cells: list[Cell], grants: _Grants) -> None:
    for policy in policies:
        applies = {id(p): p.applies_to(organization=request.organization,
                                       practitioner=request.practitioner,
                                       purpose=request.purpose, now=now)
                   for p in policy.provisions}
        if not applies[id(policy.root)]:
            continue
        grants.ends.extend(p.until for p in policy.provisions
                           if applies[id(p)] and p.until is not None)
        for cell in cells:
            result = _tree(policy.root, cell, applies, None)
            if result is None:
                continue
            effect, deciders = result
            if effect == "deny":
                grants.deny.setdefault(cell, []).extend((policy, p) for p in deciders)
            else:
                grants.permit.setdefault(cell, []).extend(
                    (policy, p, "consent") for p in deciders)


def _btg_refusals(policies: Sequence[Policy], request: DecisionRequest,
                  now: datetime) -> list[tuple[Policy, Provision]]:
    """Deny provisions that name ETREAT and reach this requester: the patient
    refused break-the-glass (for them, or for everyone)."""
    found = []
    for policy in policies:
        def visit(node: Provision, policy: Policy = policy) -> None:
            if not node.applies_to(organization=request.organization,
                                   practitioner=request.practitioner, purpose=ETREAT,
                                   now=now, ignore_purpose=True):
                return
            if node.effect == "deny" and node.purposes and ETREAT in node.purposes:
                found.append((policy, node))
            for child in node.children:
                visit(child)
        visit(policy.root)
    return found


def _break_the_glass(policies: Sequence[Policy], request: DecisionRequest, now: datetime,
                     hours: float, cells: list[Cell], grants: _Grants) -> bool:
    if not (request.reason or "").strip():
        grants.basis.append(Basis(code="break-the-glass-refused", effect="deny",
                                  text="Emergency access needs a reason; none was given"))
        return False
    refusals = _btg_refusals(policies, request, now)
    blocked = {cell for cell in cells for _, p in refusals if p.covers(*cell)}
    for policy, p in refusals:
        grants.basis.append(Basis(code="break-the-glass-refused", effect="deny",
                                  text=describe(p), consent=policy.id, provision=p.path))
    opened = [c for c in cells if c[2] is None and c not in blocked]
    if not opened:
        return False
    for cell in opened:
        grants.permit.setdefault(cell, []).append((None, None, "break-the-glass"))
    grants.ends.append(now + timedelta(hours=hours))
    grants.basis.append(Basis(
        code="break-the-glass", effect="permit",
        text=f"Emergency access (break-the-glass) for {hours:g} hours to records without a "
             f"sensitive category; reason given: {request.reason.strip()}"))
    return True


def _consultation(request: DecisionRequest, consultations: Sequence[Consultation],
                  now: datetime, cells: list[Cell], grants: _Grants) -> None:
    found = next((c for c in consultations if c.id == request.consultation), None)
    why = None
    if found is None or found.person != request.person:
        why = "no such consultation for this patient"
    elif found.status != "accepted":
        why = f"the consultation is {found.status}"
    elif not found.approved:
        why = "the patient has not approved the consultation"
    elif (found.start and now < found.start) or (found.end and now >= found.end):
        why = "the consultation is outside its period"
    elif found.invited_practitioner is not None and (
            request.practitioner != found.invited_practitioner):
        why = "only the invited practitioner may use the consultation"
    elif found.invited_organization is not None and (
            request.organization != found.invited_organization):
        why = "only the invited organisation may use the consultation"
    elif found.invited_practitioner is None and found.invited_organization is None:
        why = "the consultation invites no one"
    if why is not None:
        grants.basis.append(Basis(code="consultation-refused", effect="deny",
                                  consultation=request.consultation, text=why))
        return
    assert found is not None
    scope = found.scope
    for cell in cells:
        org, rtype, label = cell
        if (scope.organizations is None or org in scope.organizations) and (
                scope.resource_types is None or rtype in scope.resource_types) and (
                label is None or label in scope.labels):
            grants.permit.setdefault(cell, []).append((None, None, "consultation"))
    if found.end is not None:
        grants.ends.append(found.end)
    types = ", ".join(scope.resource_types) if scope.resource_types else "all record types"
    opened = f"; opened: {_label_names(scope.labels)}" if scope.labels else ""
    grants.basis.append(Basis(
        code="consultation", effect="permit", consultation=found.id, labels=list(scope.labels),
        text=f"Consultation {found.id} approved by the patient ({found.approval or 'recorded'})"
             f": {types}{opened}"))


def _cells(policies: Sequence[Policy], consultation: Consultation | None,
           own: str) -> list[Cell]:
    """Every distinct cell the rules can tell apart. The requester's own records
    are no cell: they are always visible, whatever a rule says."""
    orgs: set[str | None] = {OTHER}
    types: set[str | None] = {OTHER}
    for policy in policies:
        for p in policy.provisions:
            orgs |= p.custodians or set()
            types |= p.classes or set()
    if consultation is not None:
        orgs |= set(consultation.scope.organizations or ())
        types |= set(consultation.scope.resource_types or ())
    orgs.discard(own)
    return [(o, t, lab) for o in orgs for t in types for lab in _LABELS]


def _expand(shown: set[str | None], groups: set[str | None]) -> list[str] | None:
    """Visible type groups as resource types; None when that is every type."""
    if OTHER in shown:
        hidden = {t for t in groups if t is not None and t not in shown}
        return None if not hidden else sorted(RESOURCE_TYPES - hidden)
    return sorted(t for t in shown if t is not None)


def _compile(grants: _Grants, cells: list[Cell]) -> tuple[bool, list[str | None],
                                                         set[str | None], set[str]]:
    """The largest hospitals × types × labels product inside the visible cells
    (see the module docstring): (all hospitals?, hospitals, types, labels)."""
    visible = {c for c in cells if any(
        kind != "consent" or c not in grants.deny for *_, kind in grants.permit.get(c, ()))}
    orgs = sorted({c[0] for c in cells}, key=lambda o: (o is not None, o or ""))
    types = {c[1] for c in cells}

    def seen(org: str | None) -> set[tuple[str | None, str | None]]:
        return {(t, lab) for (o, t, lab) in visible if o == org}

    other = seen(OTHER)
    all_orgs = any(lab is None for _, lab in other) and all(
        seen(o) >= other for o in orgs if o is not None)
    chosen = orgs if all_orgs else [o for o in orgs if o is not None
                                    and any(lab is None for _, lab in seen(o))]
    shown = {t for t in types if chosen and all((o, t, None) in visible for o in chosen)}
    opened = {lab for lab in SENSITIVE_CODES
              if shown and all((o, t, lab) in visible for o in chosen for t in shown)}
    return all_orgs, chosen, shown, opened


def decide(request: DecisionRequest, *, consents: Sequence[dict[str, Any] | Policy],
           consultations: Sequence[Consultation | dict[str, Any]] = (),
           break_glass_hours: float = 4, now: datetime,
           also_known_as: Iterable[str] = ()) -> DecisionResponse:
    """Decide what ``request`` may see of the patient's records now.

    ``consents``: the patient's Consent resources (or parsed :class:`Policy`);
    ones naming another person are ignored (``also_known_as``: earlier ids of a
    merged person, which still count). A consent that cannot be read makes the
    answer deny: unreadable rules might be refusals. ``now`` must be aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must carry a timezone")
    persons = {request.person, *also_known_as}
    own = request.organization
    policies: list[Policy] = []
    unreadable: list[str] = []
    for item in consents:
        try:
            policy = item if isinstance(item, Policy) else parse_consent(item)
        except ConsentError as exc:
            unreadable.append(f"{(item.get('id') if isinstance(item, dict) else None)}: {exc}")
            continue
        if policy.person in persons and policy.active:
            policies.append(policy)
    consults = [c if isinstance(c, Consultation) else Consultation.model_validate(c)
                for c in consultations]
    named = next((c for c in consults if c.id == request.consultation), None)

    basis = [Basis(code="own-records", effect="permit",
                   text=f"{own} always sees the records it wrote itself")]
    if unreadable:
        basis.append(Basis(code="default-deny", effect="deny",
                           text="A consent of this patient could not be read, so nothing "
                                "beyond the requester's own records is shown: "
                                + "; ".join(unreadable)))
        return _denied(own, basis)

    cells = _cells(policies, named, own)
    grants = _Grants()
    _consents(policies, request, now, cells, grants)
    btg = False
    if request.purpose == ETREAT:
        btg = _break_the_glass(policies, request, now, break_glass_hours, cells, grants)
    if request.consultation is not None:
        _consultation(request, consults, now, cells, grants)

    all_orgs, chosen, shown, opened = _compile(grants, cells)
    if not shown:
        basis += grants.basis
        denies = _unique(d for ds in grants.deny.values() for d in ds)
        for pol, p in denies:
            basis.append(Basis(code="consent-deny", effect="deny", text=describe(p),
                               consent=pol.id, provision=p.path))
        if not denies and not any(b.effect == "permit" and b.code != "own-records"
                                 for b in grants.basis):
            basis.append(Basis(code="default-deny", effect="deny",
                               text="No consent of the patient lets this requester see records "
                                    "of other hospitals"))
        return _denied(own, basis)

    product = {(o, t, lab) for o in chosen for t in shown for lab in (None, *opened)}
    masks = {MASK_RESIDENT_ID}
    permits = _unique((pol, p) for c in product for pol, p, kind in grants.permit.get(c, ())
                      if kind == "consent" and pol is not None and p is not None)
    for pol, p in permits:
        masks |= p.masks
        code = "category-opened" if p.labels is not None else "consent-permit"
        basis.append(Basis(code=code, effect="permit", text=describe(p), consent=pol.id,
                           provision=p.path, labels=sorted(p.labels or ())))
    basis += grants.basis
    for pol, p in _unique(d for c in cells if c[0] in chosen or all_orgs
                          for d in grants.deny.get(c, ())):
        basis.append(Basis(code="consent-deny", effect="deny", text=describe(p),
                           consent=pol.id, provision=p.path, labels=sorted(p.labels or ())))
    hidden = sorted(SENSITIVE_CODES - opened)
    if hidden:
        basis.append(Basis(code="category-hidden", effect="deny", labels=hidden,
                           text=f"Hidden unless the patient opens them: {_label_names(hidden)}"))
    basis.append(Basis(code="mask", effect="deny", text="Masked for other organisations: "
                       + ", ".join(sorted(masks))))
    named_orgs = [o for o in chosen if o is not None]
    return DecisionResponse(
        permit=True, visible_organizations=[own, *named_orgs], all_organizations=all_orgs,
        hidden_labels=hidden, masks=sorted(masks),
        resource_types=_expand(shown, {c[1] for c in cells}),
        break_the_glass=btg and any(kind == "break-the-glass" for c in product
                                    for *_, kind in grants.permit.get(c, ())),
        expires=min(grants.ends, default=None), basis=basis)


def _denied(own: str, basis: list[Basis]) -> DecisionResponse:
    return DecisionResponse(permit=False, visible_organizations=[own],
                            hidden_labels=sorted(SENSITIVE_CODES), masks=[MASK_RESIDENT_ID],
                            basis=basis)


def _unique(items: Iterable[tuple[Policy, Provision]]) -> list[tuple[Policy, Provision]]:
    seen: dict[tuple[int, str], tuple[Policy, Provision]] = {}
    for pol, p in items:
        seen.setdefault((id(pol), p.path), (pol, p))
    return list(seen.values())
