"""The adapter's settings: where the exchange is, who the hospital is, where the
outbox lives. Options on the command line win over ``HIE_ADAPTER_*`` variables
(``HIE_ADAPTER_EXCHANGE``, ``_CLIENT_ID``, ``_KEY_FILE``, ``_KID``, ``_OUTBOX``),
as ``design.md`` fixes for every ``hie-adapter`` source."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUTBOX = "./var/adapter-outbox.db"


@dataclass(frozen=True)
class AdapterEnv:
    """The environment half of the settings: ``HIE_ADAPTER_<NAME>``, empty meaning unset.

    Plain strings, read without pydantic-settings: the adapter is a short-lived
    command as often as a service (``hie-adapter fhir`` backfills, ``status``), and
    importing pydantic for five strings was a third of its start-up time."""

    exchange: str | None = None
    client_id: str | None = None
    key_file: str | None = None
    kid: str | None = None
    outbox: str | None = None

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> AdapterEnv:
        e = os.environ if env is None else env
        return cls(**{name: e.get(f"HIE_ADAPTER_{name.upper()}") or None
                      for name in ("exchange", "client_id", "key_file", "kid", "outbox")})


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
        env = AdapterEnv.read()
        key = key_file or env.key_file
        return cls(exchange=exchange or env.exchange, client_id=client_id or env.client_id,
                   key_file=Path(key) if key else None, kid=kid or env.kid,
                   outbox=Path(outbox or env.outbox or DEFAULT_OUTBOX))

    def missing_for_push(self) -> list[str]:
        """The options a pushing source still lacks, by their command-line names."""
        names = {"exchange": "--exchange", "client_id": "--client-id", "key_file": "--key",
                 "kid": "--kid"}
        return [flag for attr, flag in names.items() if not getattr(self, attr)]
