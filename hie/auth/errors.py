"""OAuth 2.0 token-endpoint errors (RFC 6749 §5.2), as SMART uses them.

The token endpoint answers ``{"error": …, "error_description": …}`` rather than
the problem JSON of other routes, because OAuth clients parse exactly that.
Descriptions say what was wrong, never echo a token, key or secret.
"""

from __future__ import annotations


class OAuthError(Exception):
    """A refused token request."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str) -> OAuthError:
    """Client authentication failed: 401 (RFC 6749 §5.2)."""
    return OAuthError("invalid_client", description, 401)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def unsupported_grant_type(description: str) -> OAuthError:
    return OAuthError("unsupported_grant_type", description)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)
