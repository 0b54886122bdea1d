"""The adapter's settings: where the exchange is, who the hospital is, where the
outbox lives. Options on the command line win over ``HIE_ADAPTER_*`` variables
(``HIE_ADAPTER_EXCHANGE``, ``_CLIENT_ID``, ``_KEY_FILE``, ``_KID``, ``_OUTBOX``),
as ``design.md`` fixes for every ``hie-adapter`` source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_OUTBOX = "./var/adapter-outbox.db"


class AdapterEnv(BaseSettings):
    """The environment half of the settings."""

    model_config = SettingsConfigDict(env_prefix="HIE_ADAPTER_")

    exchange: str | None = None
    client_id: str | None = None
    key_file: str | None = None
    kid: str | None = None
    outbox: str | None = None


@dataclass(frozen=True)
class AdapterSettings:
    """Everything a source needs to push; ``exchange`` etc. may be missing for
    commands that only read the outbox (``status``, ``requeue``)."""

    exchange: str | None
    client_id: str | None
    key_file: Path | None
    kid: str | None
    outbox: Path

    @classmethod
    def resolve(cls, *, exchange: str | None = None, client_id: str | None = None,
                key_file: str | Path | None = None, kid: str | None = None,
                outbox: str | Path | None = None) -> AdapterSettings:
        """Options first, then the environment, then defaults."""
        env = AdapterEnv()
        key = key_file or env.key_file
        return cls(exchange=exchange or env.exchange, client_id=client_id or env.client_id,
                   key_file=Path(key) if key else None, kid=kid or env.kid,
                   outbox=Path(outbox or env.outbox or DEFAULT_OUTBOX))

    def missing_for_push(self) -> list[str]:
        """The options a pushing source still lacks, by their command-line names."""
        names = {"exchange": "--exchange", "client_id": "--client-id", "key_file": "--key",
                 "kid": "--kid"}
        return [flag for attr, flag in names.items() if not getattr(self, attr)]
