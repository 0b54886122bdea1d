"""The adapter's settings: options first, then ``HIE_ADAPTER_*``, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config import DEFAULT_OUTBOX, AdapterEnv, AdapterSettings


def test_options_win_over_the_environment_and_empty_variables_are_unset(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HIE_ADAPTER_EXCHANGE", "http://env.test")
    monkeypatch.setenv("HIE_ADAPTER_CLIENT_ID", "env-client")
    monkeypatch.setenv("HIE_ADAPTER_KEY_FILE", "/env/key.pem")
    monkeypatch.setenv("HIE_ADAPTER_KID", "")
    monkeypatch.delenv("HIE_ADAPTER_OUTBOX", raising=False)
    settings = AdapterSettings.resolve(client_id="option-client")
    assert settings == AdapterSettings(exchange="http://env.test", client_id="option-client",
                                       key_file=Path("/env/key.pem"), kid=None,
                                       outbox=Path(DEFAULT_OUTBOX))
    assert settings.missing_for_push() == ["--kid"]


def test_environment_is_read_from_a_mapping():
    env = AdapterEnv.read({"HIE_ADAPTER_OUTBOX": "/tmp/o.db", "HIE_ADAPTER_KID": "k1",
                           "OTHER": "x"})
    assert env == AdapterEnv(outbox="/tmp/o.db", kid="k1")
