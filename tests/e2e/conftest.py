"""A real exchange process on 127.0.0.1 with a hospital registered through
``hie admin`` and its real key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_process import HospitalSystem, exchange_env, free_port, hie, running_exchange

from hie.auth.jwk import new_client_key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HospitalSystem]:
    """Register a hospital with ``hie admin``, start ``hie serve`` on a fresh
    SQLite store, and yield the hospital's system."""
    folder: Path = tmp_path_factory.mktemp("exchange")
    port = free_port()
    pem, jwk = new_client_key("ES384", kid="e2e-key-1")
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    hie("admin", "create-organization", "--name", "E2E 市第一人民医院", "--id", "e2e",
        "--jwks", str(jwks), env=exchange_env(folder, f"http://127.0.0.1:{port}"))
    with running_exchange(folder, port) as base:
        yield HospitalSystem(base=base, client_id="e2e", kid="e2e-key-1", private_pem=pem)
