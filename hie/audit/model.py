"""What one audit record says, before it becomes a FHIR ``AuditEvent``.

Callers (the FHIR routes, the access-decision dependency, the token endpoint,
the identity admin commands) build an :class:`AuditRecord` and hand it to
:func:`hie.audit.chain.append_in_tx` (writes: atomic with the write) or to
:meth:`hie.audit.log.AuditLog.record` (read decisions: batched). Building one
is cheap on purpose — plain data, no validation, no I/O — because it happens on
every request; redaction and the FHIR mapping run later, in the writer.

Never put secrets (tokens, assertions, passwords) or a full resident ID number
in a record. As a second line of defence :func:`redact` masks resident ID
numbers and secret-looking query parameters in every free-text field when the
record is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote_plus, unquote

from hie.identity.resident_id import mask_text

Outcome = Literal["permit", "deny", "error"]

#: The prefix of the reference that names a regional person (the master patient
#: index's id) in an ``AuditEvent`` entity and in the ``patient`` index.
PERSON_REF_PREFIX = "urn:hie:person:"


def now_stamp() -> str:
    """The current time in the store's fixed-width UTC form (``hie.store.index``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def person_ref(person_id: str) -> str:
    """The reference under which a regional person's records are indexed.

    >>> person_ref("p-42")
    'urn:hie:person:p-42'
    """
    return PERSON_REF_PREFIX + person_id


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One write or one access decision (permit, deny or error).

    ``interaction`` is a FHIR restful interaction (``read``, ``vread``,
    ``update``, ``patch``, ``delete``, ``history-instance``, ``history-type``,
    ``history-system``, ``create``, ``search-type``, ``search-system``,
    ``capabilities``, ``transaction``, ``batch``, ``operation``), an operation
    name (``$everything``, ``$ihe-pix``) or one of the exchange's own actions
    (``login``, ``link``, ``unlink``, ``consent``). ``resource_ids`` are ids of
    ``resource_type`` or whole references (``Type/id``); searches give the
    ``query`` and the ``count`` returned rather than every id.
    ``patient_refs`` are ``Patient/…`` references; ``person`` is the regional
    person id. ``purpose_of_use`` is an HL7 v3 ActReason code (``TREAT``,
    ``ETREAT``…), ``reason`` the break-the-glass justification,
    ``consultation`` the consultation reference.
    :func:`from_context` fills the caller's part from the request context.
    """

    interaction: str
    outcome: Outcome
    status: int | None = None
    organization: str | None = None
    client_id: str | None = None
    practitioner: str | None = None
    person: str | None = None
    patient_refs: tuple[str, ...] = ()
    resource_type: str | None = None
    resource_ids: tuple[str, ...] = ()
    query: str | None = None
    count: int | None = None
    purpose_of_use: str | None = None
    reason: str | None = None
    consultation: str | None = None
    token_id: str | None = None  # the access token's jti (names it; is no secret)
    detail: str | None = None
    request_id: str | None = None
    recorded: str = field(default_factory=now_stamp)


def from_context(ctx: object, *, interaction: str, outcome: Outcome,
                 **fields: object) -> AuditRecord:
    """A record whose caller fields come from a request context.

    Reads ``organization``, ``practitioner``, ``purpose_of_use`` and, when the
    context has them (``hie.auth``'s ``AuthContext``), ``client_id``,
    ``reason``, ``consultation`` and ``token_id``; ``fields`` sets the rest
    (and may override). Structural on purpose: the audit domain does not
    import the auth domain.
    """
    caller = {name: getattr(ctx, name, None) for name in (
        "organization", "practitioner", "purpose_of_use", "client_id", "reason",
        "consultation", "token_id")}
    return AuditRecord(interaction=interaction, outcome=outcome,  # type: ignore[arg-type]
                       **{**caller, **fields})


# -- redaction -----------------------------------------------------------------

#: Query parameters whose values are credentials, whatever the route. (Not
#: OAuth's ``code``: it is also FHIR's most common search parameter.)
SECRET_PARAMS = frozenset({
    "access_token", "token", "client_assertion", "assertion", "password", "client_secret",
    "refresh_token", "id_token",
})


#: Fifteen ASCII digits in a row: every number :func:`mask_text` masks has them
#: (``hie.identity.resident_id.TEXT_PATTERN``: 6 + 6 + 3 digits, or 6 + 8 + 3 and
#: a check character). Looking for them costs half of running the masking
#: pattern, and most text (references, ids, queries) has none.
_DIGIT_RUN = re.compile(r"[0-9]{15}")


def mask_resident_ids(text: str) -> str:
    """Hide the birth-date digits of every resident ID number in ``text`` (the
    identity domain's one masking rule).

    >>> mask_resident_ids("identifier=urn:oid:2.16.156.10011.1.1|11010519491231002X")
    'identifier=urn:oid:2.16.156.10011.1.1|110105********002X'
    """
    if len(text) < 15 or _DIGIT_RUN.search(text) is None:
        return text  # no resident ID number can be in it
    return mask_text(text)


#: What ``urlencode`` leaves unescaped in the redacted query.
_QUERY_SAFE = "|:/,$*"
#: A query name or value that decoding and re-encoding give back unchanged: no
#: ``%`` or ``+`` to decode, nothing ``quote_plus`` escapes (its always-safe
#: characters and ``_QUERY_SAFE``).
_PLAIN = re.compile(r"[A-Za-z0-9_.~|:/,$*-]*")


def _requote(part: str) -> str:
    """A query name or value as ``parse_qsl`` decodes it and ``urlencode``
    (with ``_QUERY_SAFE``) writes it back."""
    if _PLAIN.fullmatch(part):
        return part
    decoded = unquote(part.replace("+", " "))
    return decoded if _PLAIN.fullmatch(decoded) else quote_plus(decoded, safe=_QUERY_SAFE)


def redact_query(query: str) -> str:
    """Mask secret parameters and resident ID numbers of a query string.

    The result is ``urlencode(parse_qsl(query.lstrip("?"), keep_blank_values=True),
    safe="|:/,$*")`` with the values of :data:`SECRET_PARAMS` as ``***`` (the
    original query when it has no parameters), masked. It is computed a
    parameter at a time, as those functions do, without them: they cost a
    third of a search's audit event, and a query is mostly plain names and
    values that decoding and encoding leave alone.
    """
    out = []
    for piece in query.lstrip("?").split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")  # no "=": a name with an empty value
        if _PLAIN.fullmatch(name):
            key = name
        else:
            key = unquote(name.replace("+", " "))
            name = quote_plus(key, safe=_QUERY_SAFE)
        value = "***" if key.lower() in SECRET_PARAMS else _requote(value)
        out.append(f"{name}={value}")
    if not out:
        return mask_resident_ids(query)
    return mask_resident_ids("&".join(out))


def redact(text: str | None) -> str | None:
    """Mask resident ID numbers in free text (``None`` stays ``None``)."""
    return None if text is None else mask_resident_ids(text)
