"""Settings of the trust layer, as a mixin of the exchange's settings.

The lead merges these fields into :class:`hie.config.Settings` (or lets
``Settings`` inherit :class:`AuthSettings`); every field reads an ``HIE_*``
environment variable like the rest of the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    """Token lifetimes and clock tolerance."""

    model_config = SettingsConfigDict(env_prefix="HIE_", extra="ignore")

    #: Lifetime of access tokens issued at /auth/token (SMART suggests 5 minutes).
    access_token_seconds: int = 300
    #: Longest lifetime `hie admin token --hours` may ask for; also how long a
    #: rotated signing key keeps verifying.
    admin_token_max_hours: int = 24
    #: Clock difference tolerated between hospital systems and the exchange.
    clock_skew_seconds: int = 30


class TrustSettings(Protocol):
    """What the trust layer reads from the exchange's settings object."""

    base_url: str
    var_dir: str
    access_token_seconds: int
    admin_token_max_hours: int
    clock_skew_seconds: int

    @property
    def fhir_base(self) -> str: ...


def token_url(settings: TrustSettings) -> str:
    """The token endpoint's URL: the audience every client assertion must name."""
    return settings.base_url.rstrip("/") + "/auth/token"


def issuer(settings: TrustSettings) -> str:
    """The ``iss`` of the exchange's access tokens."""
    return settings.base_url.rstrip("/")


def keys_dir(settings: TrustSettings) -> Path:
    """Where the exchange's signing keys live."""
    return Path(settings.var_dir) / "keys"


def key_retention_seconds(settings: TrustSettings) -> int:
    """How long a retired signing key keeps verifying: longer than any token it
    can have signed lives, plus the time workers take to notice a rotation."""
    longest = max(settings.access_token_seconds, settings.admin_token_max_hours * 3600)
    return longest + 2 * settings.clock_skew_seconds + 60
