"""One real exchange per test module of the adapter's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from adapter_exchange import Exchange, start_exchange


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    """``hie serve`` with the hospital ``adapt`` registered (ES384 key)."""
    running = start_exchange(tmp_path_factory.mktemp("exchange"))
    try:
        yield running
    finally:
        running.stop()
