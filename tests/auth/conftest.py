"""Fixtures of the trust-layer tests (defined in ``auth.trustkit``)."""

from auth.trustkit import (  # noqa: F401
    hospital,
    http,
    other_hospital,
    store,
    tokens,
    trust_app,
    trust_settings,
)
