"""Parsing and validating FHIR JSON with ``fhir.resources`` (R4B models, which
read the R4 content of the resource types we serve).

We validate with the models but keep and store the client's own JSON (with
``id`` and ``meta`` set by us): dumping the model again would cost as much as
validating and could change what the client sent.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hie.fhir.outcome import FhirError, Issue, bad_request, unknown_type
from schemas.required_bindings import REQUIRED_CODES
from schemas.resource_types import RESOURCE_TYPES


def parse_json(body: bytes) -> Any:
    """Parse a request body as JSON or raise a 400 ``OperationOutcome``."""
    if not body:
        raise bad_request("The request body is empty; a FHIR JSON resource was expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from None


def parse_resource(body: bytes, expected_type: str | None = None) -> dict[str, Any]:
    """Parse and validate one resource; return it as a dict."""
    resource = parse_json(body)
    validate_resource(resource, expected_type)
    return resource


def check_type(resource_type: str) -> None:
    """Raise 404 ``not-supported`` for a type this server does not serve."""
    if resource_type not in RESOURCE_TYPES:
        raise unknown_type(resource_type)


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def validation_issues(resource: Any, expected_type: str | None = None,
                      where: str = "") -> list[Issue]:
    """Return the problems of ``resource`` (empty when it is valid).

    ``where`` prefixes issue locations, e.g. ``Bundle.entry[3].resource``.
    """
    if not isinstance(resource, dict):
        return [Issue("structure", "A FHIR resource must be a JSON object", [where or "$this"])]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return [Issue("required", "The resource has no resourceType",
                      [f"{where}.resourceType" if where else "resourceType"])]
    if expected_type is not None and rtype != expected_type:
        return [Issue("invalid", f"resourceType {rtype!r} does not match the URL ({expected_type})",
                      [f"{where}.resourceType" if where else "resourceType"])]
    if rtype not in RESOURCE_TYPES:
        return [Issue("not-supported", f"Resource type {rtype!r} is not supported here",
                      [f"{where}.resourceType" if where else "resourceType"])]
    try:
        _model(rtype).model_validate(resource)
    except ValidationError as exc:
        return [_issue(err, where or rtype) for err in exc.errors()[:50]]
    except (ValueError, TypeError) as exc:  # some fhir.resources checks raise plainly
        return [Issue("invalid", str(exc), [where or rtype])]
    return _binding_issues(resource, rtype, where or rtype)


def _binding_issues(resource: dict[str, Any], rtype: str, root: str) -> list[Issue]:
    """Codes outside a required value set (the models check only their shape)."""
    issues = []
    for element, allowed in REQUIRED_CODES.get(rtype, {}).items():
        value = resource.get(element)
        if value is not None and value not in allowed:
            issues.append(Issue("code-invalid",
                                f"{value!r} is not in the required value set of "
                                f"{rtype}.{element} ({', '.join(sorted(allowed))})",
                                [f"{root}.{element}"]))
    return issues


def validate_resource(resource: Any, expected_type: str | None = None) -> None:
    """Raise a 400 ``OperationOutcome`` naming every problem of ``resource``."""
    if expected_type is not None:
        check_type(expected_type)
    issues = validation_issues(resource, expected_type)
    if issues:
        status = 404 if issues[0].code == "not-supported" and expected_type else 400
        raise FhirError(status, issues)


def _issue(err: Any, root: str) -> Issue:
    """Turn one pydantic error into an issue located by a FHIRPath expression."""
    path = root
    for part in err.get("loc", ()):
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = str(part)
            if name.endswith("__ext"):
                name = "_" + name[:-5]
            path += "." + name
    msg = err.get("msg", "invalid value")
    kind = err.get("type", "")
    code = {"missing": "required", "extra_forbidden": "structure"}.get(kind, "value")
    if kind == "extra_forbidden":
        msg = "Unknown element"
    return Issue(code, f"{msg} at {path}", [path])
