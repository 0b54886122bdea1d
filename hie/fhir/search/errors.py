"""The one error search parsing raises (a 400 ``OperationOutcome`` upstream)."""

from __future__ import annotations


class SearchError(Exception):
    """A search request the server will not run; ``param`` names the offending
    parameter (as the client wrote it) so the outcome can point at it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
