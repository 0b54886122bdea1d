"""FHIR ``OperationOutcome`` errors.

Every failure on ``/fhir`` is raised as :class:`FhirError` and rendered by one
exception handler as an ``OperationOutcome`` with the right HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Issue:
    """One problem: FHIR issue ``code`` (``invalid``, ``not-found``, …), a
    human-readable ``diagnostics`` and where it is (FHIRPath ``expression``)."""

    code: str
    diagnostics: str
    expression: list[str] = field(default_factory=list)
    severity: str = "error"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code,
                               "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = self.expression
        return out


class FhirError(Exception):
    """An error answered with an ``OperationOutcome``."""

    def __init__(self, status: int, issues: list[Issue] | Issue,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.issues = issues if isinstance(issues, list) else [issues]
        self.headers = headers or {}
        super().__init__("; ".join(i.diagnostics for i in self.issues))

    def outcome(self) -> dict[str, Any]:
        """Return the ``OperationOutcome`` resource."""
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """Return an ``OperationOutcome`` with these issues."""
    return {"resourceType": "OperationOutcome", "issue": [i.as_json() for i in issues]}


def information(message: str) -> dict[str, Any]:
    """Return an informational ``OperationOutcome`` (e.g. for a successful delete)."""
    return operation_outcome([Issue("informational", message, severity="information")])


def bad_request(message: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError(400, Issue(code, message, [expression] if expression else []))


def not_found(resource_type: str, id: str) -> FhirError:
    return FhirError(404, Issue("not-found", f"Resource {resource_type}/{id} is not known"))


def gone(resource_type: str, id: str) -> FhirError:
    return FhirError(410, Issue("deleted", f"Resource {resource_type}/{id} has been deleted"))


def unknown_type(resource_type: str) -> FhirError:
    return FhirError(404, Issue("not-supported",
                                f"Resource type {resource_type!r} is not supported here"))


def conflict(message: str) -> FhirError:
    return FhirError(409, Issue("conflict", message))


def precondition_failed(message: str) -> FhirError:
    return FhirError(412, Issue("conflict", message))


def unprocessable(issues: list[Issue]) -> FhirError:
    return FhirError(422, issues)
