"""Fixtures of the identity tests: an opened store of each back end (SQLite in
``tmp_path`` and MongoDB over the in-memory double), settings, and a pusher."""

from __future__ import annotations

from pathlib import Path

import pytest
from identity.helpers import Pusher

from hie.config import Settings
from hie.store.base import Store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", var_dir=str(tmp_path / "var"))


@pytest.fixture
def push(store: Store, settings: Settings) -> Pusher:
    return Pusher(store, settings)
