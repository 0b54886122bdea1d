"""DICOMweb tests: the exchange app with a body limit fit for instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from hie.config import Settings

BASE = "http://testserver"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                    var_dir=str(tmp_path), max_body_bytes=8 * 1024 * 1024)
