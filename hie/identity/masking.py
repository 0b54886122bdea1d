"""Hiding resident ID numbers from everyone but the patient.

Three places a number could leak, three tools:

* responses — :func:`mask_patient` masks the identifier values of the resident
  system (and any number in the narrative) of a Patient; :func:`mask_body`
  does it on stored JSON bytes of any resource or Bundle, touching (and
  re-serialising) only bodies that can contain a number;
* logs — :class:`ResidentIdLogFilter` masks numbers in every log message;
* error messages — :mod:`hie.identity.resident_id` never puts a whole number in
  one, and :func:`hie.identity.resident_id.mask_text` cleans free text.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from hie.identity.resident_id import TEXT_PATTERN, mask, mask_text
from hie.store.base import StoredResource

# 15 or more digits in a row: a body without them holds no number at all
_DIGITS = re.compile(rb"[0-9]{15}")


def mask_identifiers(identifiers: Any, system: str) -> Any:
    """A copy of an ``identifier`` list with resident-system values masked."""
    if not isinstance(identifiers, list):
        return identifiers
    out = []
    for ident in identifiers:
        if isinstance(ident, dict) and ident.get("system") == system \
                and isinstance(ident.get("value"), str):
            ident = {**ident, "value": mask(ident["value"])}
        out.append(ident)
    return out


def mask_patient(patient: dict[str, Any], *, system: str) -> dict[str, Any]:
    """A copy of a Patient (or any resource with ``identifier``s) whose
    resident ID numbers are masked, in identifiers and narrative alike."""
    out = dict(patient)
    if "identifier" in out:
        out["identifier"] = mask_identifiers(out["identifier"], system)
    text = out.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        out["text"] = {**text, "div": mask_text(text["div"])}
    if isinstance(out.get("contained"), list):
        out["contained"] = [mask_patient(c, system=system) if isinstance(c, dict) else c
                            for c in out["contained"]]
    return out


def _mask_tree(node: Any, system: str) -> Any:
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient" or "identifier" in node:
            node = mask_patient(node, system=system)
        return {k: _mask_tree(v, system) if isinstance(v, dict | list) else v
                for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_tree(v, system) for v in node]
    return node


def mask_body(body: bytes, *, system: str) -> bytes:
    """JSON bytes of a resource or Bundle with every resident ID number in an
    identifier or narrative masked. Bodies without 15 consecutive digits are
    returned as they are (no parsing: the common case costs one regex scan)."""
    if not _DIGITS.search(body):
        return body
    masked = orjson.dumps(_mask_tree(orjson.loads(body), system))
    # numbers written elsewhere (a note, a display text) are masked too
    return mask_text(masked.decode("utf-8")).encode("utf-8")


def body_for_caller(record: StoredResource, *, caller_source: str | None, system: str,
                    is_patient: bool = False) -> bytes:
    """The stored body as a caller may see it: unmasked for the patient and for
    the organisation that wrote it (it holds the number anyway), masked for
    everyone else."""
    if is_patient or (caller_source is not None and record.source == caller_source):
        return record.body
    return mask_body(record.body, system=system)


class ResidentIdLogFilter(logging.Filter):
    """Masks resident ID numbers in log records (install on handlers or loggers).

    The message is formatted once with its arguments, masked, and stored back
    without arguments, so a number passed as ``%s`` argument is caught too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler
            return True
        if TEXT_PATTERN.search(message):
            record.msg, record.args = mask_text(message), None
        return True
