"""Wire contracts of the consent decision API (``POST /consent/decide``).

The exchange asks (requester organisation, practitioner, purpose, patient) and
gets back what that requester may see of the patient's records: which source
organisations, which sensitivity categories stay hidden, what must be masked,
until when, and the provisions that decided it (shown to patients and privacy
officers). A :class:`Consultation` is the consent service's record of one
remote consultation (远程会诊), an input to the decision.

Scope of a decision: ``hidden_labels``, ``masks`` and ``resource_types`` bind
the records of *other* organisations. The requester's own records are always
visible in full (a hospital always sees what it wrote).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

#: HL7 v3 PurposeOfUse codes (system ``v3-ActReason``) the exchange understands.
TREAT = "TREAT"
ETREAT = "ETREAT"  # emergency treatment: break-the-glass when a reason is given

#: Mask obligations: elements the exchange removes or masks in what it returns.
MASK_RESIDENT_ID = "resident-id"  # always, for every organisation but the author
MASK_TELECOM = "telecom"
MASK_ADDRESS = "address"
MASKS: frozenset[str] = frozenset({MASK_RESIDENT_ID, MASK_TELECOM, MASK_ADDRESS})

#: Stable codes of :class:`Basis` (the portal translates them).
BasisCode = Literal[
    "own-records",           # the requester's own records are always visible
    "default-deny",          # no consent opens other hospitals' records
    "consent-permit",        # a permit provision applies
    "consent-deny",          # a deny provision applies (deny wins)
    "category-hidden",       # a sensitive category stays hidden (not opened, or denied)
    "category-opened",       # a permit provision opened a sensitive category
    "mask",                  # an obligation to mask
    "break-the-glass",       # emergency access granted
    "break-the-glass-refused",  # no reason given, or the patient refused it
    "consultation",          # an open, approved consultation grants its scope
    "consultation-refused",  # the named consultation does not grant access now
    "consent-unavailable",   # the consent service could not answer: deny, never allow
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionRequest(_Model):
    """Who asks, for what, about whom."""

    organization: str = Field(min_length=1, description="requester organisation id")
    practitioner: str | None = Field(None, description="practitioner id, when a doctor acts")
    purpose: str = Field(min_length=1, description="v3 PurposeOfUse: TREAT, ETREAT, …")
    reason: str | None = Field(None, description="why; required for ETREAT (break-the-glass)")
    consultation: str | None = Field(None, description="consultation id the token names")
    person: str = Field(min_length=1, description="regional person id of the patient")


class Basis(_Model):
    """One reason in a decision: which rule or provision, with what effect."""

    code: BasisCode
    effect: Literal["permit", "deny"]
    text: str = Field(description="English; the portal translates by ``code``")
    consent: str | None = Field(None, description="Consent id, when a consent decided")
    provision: str | None = Field(
        None, description="path of the provision in that Consent, e.g. provision.provision[1]")
    consultation: str | None = None
    labels: list[str] = Field(default_factory=list, description="categories concerned")


class DecisionResponse(_Model):
    """What the requester may see of the patient's records."""

    permit: bool = Field(description="may see anything beyond its own records")
    visible_organizations: list[str] = Field(
        description="organisations whose records are visible; always the requester's own")
    all_organizations: bool = Field(
        False, description="records of every organisation of the region are visible "
                           "(a grant without custodian limit); visible_organizations then "
                           "lists only the explicitly named ones")
    hidden_labels: list[str] = Field(default_factory=list,
                                     description="sensitivity codes whose records stay hidden")
    masks: list[str] = Field(default_factory=list, description="mask obligations")
    resource_types: list[str] | None = Field(
        None, description="resource types visible from other organisations; None = all")
    break_the_glass: bool = False
    expires: AwareDatetime | None = Field(
        None, description="when this decision stops holding; decide again after it")
    basis: list[Basis] = Field(default_factory=list)

    def sees(self, organization: str) -> bool:
        """Whether records written by ``organization`` are visible at all."""
        return self.all_organizations or organization in self.visible_organizations


#: requested → accepted → completed / cancelled; ``declined``: the patient said no.
ConsultationStatus = Literal["requested", "accepted", "completed", "cancelled", "declined"]


class ConsultationScope(_Model):
    """What an invited consultant may read: resource types, opened categories,
    and whose records (``organizations`` None = every hospital of the region)."""

    resource_types: list[str] | None = None
    labels: list[str] = Field(default_factory=list,
                              description="sensitive categories the patient opened for it")
    organizations: list[str] | None = None


class Consultation(_Model):
    """One remote consultation (远程会诊), as the decision engine needs it.

    The lifecycle lives in FHIR (``ServiceRequest`` + ``Task``); this is the
    summary the consent service keeps for decisions.
    """

    id: str = Field(min_length=1)
    person: str = Field(min_length=1, description="regional person id of the patient")
    requester: str = Field(min_length=1, description="requesting organisation id")
    invited_organization: str | None = None
    invited_practitioner: str | None = None
    status: ConsultationStatus = "requested"
    approved: bool = Field(False, description="the patient approved it (portal or paper)")
    approval: Literal["portal", "paper"] | None = None
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    reason: str | None = None
    scope: ConsultationScope = Field(default_factory=ConsultationScope)
    version: int | None = Field(
        None, description="stored version (None: not stored yet); a save over a version "
                          "that is no longer current is refused, so concurrent moves of the "
                          "lifecycle cannot undo each other")

    @model_validator(mode="after")
    def _approval_is_consistent(self) -> Consultation:
        # an approval method without approval (or the reverse) is a bookkeeping bug
        if self.approved != (self.approval is not None):
            raise ValueError("approved and approval go together")
        return self


class BreakGlass(_Model):
    """One break-the-glass session: a practitioner's emergency access to one
    patient, time-boxed from when it *started* (``expires`` = start + the
    configured hours). Every session goes to the privacy officers' review queue
    until ``reviewed``."""

    id: str = Field(min_length=1)
    person: str = Field(min_length=1, description="regional person id of the patient")
    organization: str = Field(min_length=1, description="the requester's organisation")
    practitioner: str | None = Field(None, description="the doctor who broke the glass")
    reason: str = Field(min_length=1, description="the reason the doctor gave")
    started: AwareDatetime
    expires: AwareDatetime
    reviewed: bool = False
    reviewer: str | None = Field(None, description="who reviewed it (a privacy officer)")
    reviewed_at: AwareDatetime | None = None
    note: str | None = Field(None, description="the reviewer's finding")

    def active(self, now: datetime) -> bool:
        """Whether the session still grants access at ``now``."""
        return self.started <= now < self.expires


class NewConsultation(_Model):
    """``POST /consent/consultations``: a hospital asks for a remote consultation.

    The patient is named by the regional ``person`` id, or by ``patient``, the
    id of the requesting hospital's own Patient resource (resolved to its person
    by the exchange). The requester is the calling hospital."""

    person: str | None = Field(None, min_length=1)
    patient: str | None = Field(None, min_length=1)
    invited_organization: str | None = Field(None, min_length=1)
    invited_practitioner: str | None = Field(None, min_length=1)
    reason: str = Field(min_length=1, max_length=2000)
    start: AwareDatetime
    end: AwareDatetime
    scope: ConsultationScope = Field(default_factory=ConsultationScope)

    @model_validator(mode="after")
    def _one_patient(self) -> NewConsultation:
        if (self.person is None) == (self.patient is None):
            raise ValueError("name the patient by exactly one of person or patient")
        return self


class BreakGlassReview(_Model):
    """``POST /consent/break-glass/{id}/review``: a privacy officer's finding."""

    note: str = Field(min_length=1, max_length=4000)
