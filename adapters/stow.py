"""STOW-RS batches: the pusher's way of sending ``dicom`` outbox messages.

A ``dicom`` message is one instance's DICOM JSON dataset (metadata only; see
``adapters.sources.dicom_scp``). Instances need no order between them, so the
pusher sends them per study, up to :data:`BATCH` instances in one
``POST /dicomweb/studies`` (a JSON array), and settles *each* message from the
exchange's answer:

- named in ReferencedSOPSequence (0008,1199) → done;
- named in FailedSOPSequence (0008,1198) → dead letter with the FailureReason
  (even ``0xA700``: the exchange, like ``imaging``, uses it for an instance over a
  limit, which a retry would not change; ``hie-adapter requeue`` sends it again);
- network error, 401 after a fresh token, 408, 429, 5xx → every message retried
  with the pusher's backoff (at least ``Retry-After``);
- 400 or 413 for a request of several instances → the batch is halved and each
  half sent again, so that one malformed or oversized instance is found and
  dead-lettered alone instead of taking its study's other instances with it;
- any other 4xx (or 400/413 for a single instance) → dead letter.

Re-sending is harmless: the exchange keys an instance by the hospital and its
SOP Instance UID, and an identical copy changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.client import ExchangeClient, Result, backoff
from adapters.outbox import Message, Outbox

log = logging.getLogger("adapters.stow")

BATCH = 100
"""Instances of one study per STOW-RS request at most."""

STUDY_UID = "0020000D"
SOP_INSTANCE_UID = "00080018"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
ERROR_COMMENT = "00000902"  # the exchange's reason, in a FailedSOPSequence item

FAILURE_TEXT = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "refused: not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


def first_value(dataset: dict[str, Any], tag: str) -> Any:
    """The first ``Value`` of ``tag`` in a DICOM JSON dataset, or None."""
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


@dataclass
class Settled:
    """What one STOW-RS exchange did to its messages."""

    done: list[Message] = field(default_factory=list)
    dead: int = 0
    retried: int = 0
    last: Result | None = None


class StowSender:
    """Sends one study's ``dicom`` messages in STOW-RS requests and settles each."""

    def __init__(self, outbox: Outbox, client: ExchangeClient, *,
                 max_delay: float = 300.0) -> None:
        self.outbox = outbox
        self.client = client
        self.max_delay = max_delay

    def send(self, messages: list[Message]) -> Settled:
        """POST ``messages`` (one study) as one request, bisecting on 400/413."""
        settled = Settled()
        sendable: list[Message] = []
        uids: dict[int, str] = {}
        for m in messages:
            uid = _sop_uid(m.payload)
            if uid is None:  # never let it spoil its study's request
                self._dead(m, "the outbox payload is not a DICOM JSON dataset with a SOP "
                              "Instance UID", settled)
            else:
                uids[m.id] = uid
                sendable.append(m)
        self._send(sendable, uids, settled)
        return settled

    def _send(self, messages: list[Message], uids: dict[int, str], settled: Settled) -> None:
        if not messages:
            return
        result = self.client.post_dicom([m.payload for m in messages])
        settled.last = result
        if result.status in (400, 413) and len(messages) > 1:
            half = len(messages) // 2
            log.info("STOW-RS of %d instances answered %s; sending halves", len(messages),
                     result.status)
            self._send(messages[:half], uids, settled)
            self._send(messages[half:], uids, settled)
            return
        if result.outcome == "retry":
            # one delay for the batch (jitter between batches, not inside one), so
            # that the study goes again in one request rather than in crumbs
            delay = backoff(max(m.attempts for m in messages), cap=self.max_delay)
            if result.retry_after is not None:
                delay = max(delay, min(result.retry_after, self.max_delay))
            at = time.time() + delay
            for m in messages:
                self.outbox.retry(m.id, result.error, at)
            settled.retried += len(messages)
            return
        answer = _dataset(result.body) if result.status in (200, 202, 409) else None
        if answer is None:
            for m in messages:
                self._dead(m, result.error or f"HTTP {result.status} without a STOW-RS "
                              "answer", settled, body=result.body)
            return
        referenced = _by_uid(answer.get(REFERENCED_SOP_SEQUENCE))
        failed = _by_uid(answer.get(FAILED_SOP_SEQUENCE))
        stored: list[Message] = []
        for m in messages:
            uid = uids[m.id]
            if uid in referenced:
                warning = first_value(referenced[uid], WARNING_REASON)
                if warning is not None:
                    log.info("instance %s stored with warning 0x%04X", uid, warning)
                stored.append(m)
            elif uid in failed:
                code = first_value(failed[uid], FAILURE_REASON)
                comment = first_value(failed[uid], ERROR_COMMENT)
                self._dead(m, f"STOW-RS failure {_code_text(code)} for SOP Instance {uid}"
                              + (f": {comment}" if comment else ""), settled)
            else:
                self._dead(m, f"HTTP {result.status}: the exchange's STOW-RS answer names "
                              f"SOP Instance {uid} neither as stored nor as failed",
                           settled)
        # one transaction for the batch: the SCP's puts wait for this write lock
        self.outbox.done_many(m.id for m in stored)
        settled.done += stored

    def _dead(self, m: Message, reason: str, settled: Settled, *, body: bytes = b"") -> None:
        outcome = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": reason}]}
        if body:
            outcome["issue"][0]["details"] = {"text": body[:2000].decode("utf-8", "replace")}
        self.outbox.dead(m.id, json.dumps(outcome))
        settled.dead += 1
        log.warning("dicom message %s refused by the exchange: %s", m.id, reason)


def groups(messages: list[Message], *, size: int = BATCH) -> list[list[Message]]:
    """``dicom`` messages as STOW-RS requests of at most ``size``: grouped by
    StudyInstanceUID, a study's instances next to each other, and small studies packed
    into one request (the exchange stores each study of a request in its own
    transaction; fewer requests save it the cost of each). Payloads without a study
    UID travel alone (the exchange decides about them)."""
    by_study: dict[str, list[Message]] = {}
    alone: list[list[Message]] = []
    for m in messages:
        study = _study_uid(m.payload)
        if study is None:
            alone.append([m])
        else:
            by_study.setdefault(study, []).append(m)
    ordered = [m for group in by_study.values() for m in group]
    return [ordered[i:i + size] for i in range(0, len(ordered), size)] + alone


def _load(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _study_uid(payload: bytes) -> str | None:
    dataset = _load(payload)
    value = first_value(dataset, STUDY_UID) if dataset is not None else None
    return value if isinstance(value, str) else None


def _sop_uid(payload: bytes) -> str | None:
    dataset = _load(payload)
    value = first_value(dataset, SOP_INSTANCE_UID) if dataset is not None else None
    return value if isinstance(value, str) and value else None


def _dataset(body: bytes) -> dict[str, Any] | None:
    """The STOW-RS response dataset (a dataset, or an array of one)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, dict) else None


def _by_uid(sequence: Any) -> dict[str, dict[str, Any]]:
    items = sequence.get("Value") if isinstance(sequence, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else []:
        uid = first_value(item, REFERENCED_SOP_INSTANCE_UID) if isinstance(item, dict) \
            else None
        if isinstance(uid, str):
            out[uid] = item
    return out


def _code_text(code: Any) -> str:
    if not isinstance(code, int):
        return "(no FailureReason)"
    return f"0x{code:04X} ({FAILURE_TEXT.get(code, 'failure')})"

