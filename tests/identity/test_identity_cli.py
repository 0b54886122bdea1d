"""``hie identity …`` commands against a SQLite store file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from identity.helpers import Pusher, make_rid, patient
from typer.testing import CliRunner

from hie.config import Settings
from hie.identity.cli import app
from hie.identity.model import LinkResult
from hie.store import open_store


def _seed(url: str, settings: Settings) -> list[LinkResult]:
    async def go() -> list[LinkResult]:
        store = open_store(url)
        await store.open()
        try:
            push = Pusher(store, settings)
            number = make_rid()
            return [await push(patient(rid=number), "org-a"),
                    await push(patient(rid=number, hospital="b"), "org-b"),
                    await push(patient(name="吴明", gender="male", phone=None, address=None),
                               "org-c"),
                    await push(patient(name="吴明", gender="male", phone=None, address=None,
                                       hospital="d"), "org-d")]
        finally:
            await store.close()

    return asyncio.run(go())


def test_cli_shows_lists_and_changes_links(tmp_path: Path, settings: Settings) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    a, b, c, d = _seed(url, settings)
    runner = CliRunner()
    shown = runner.invoke(app, ["show", a.patient_id, "--store-url", url])
    assert shown.exit_code == 0, shown.output
    assert sorted(json.loads(shown.output)["patients"]) == sorted([a.patient_id, b.patient_id])

    listed = runner.invoke(app, ["reviews", "--store-url", url])
    [item] = [json.loads(line) for line in listed.output.splitlines()]
    assert item["patient"] == d.patient_id

    decided = runner.invoke(app, ["decide", item["id"], "link", "--actor", "ops",
                                  "--store-url", url])
    assert decided.exit_code == 0, decided.output
    assert f"person {c.person_id}" in decided.output

    unlinked = runner.invoke(app, ["unlink", b.patient_id, "--actor", "ops",
                                   "--store-url", url])
    assert unlinked.exit_code == 0 and "unlink" in unlinked.output
    refused = runner.invoke(app, ["unlink", b.patient_id, "--actor", "ops",
                                  "--store-url", url])
    assert refused.exit_code == 1 and "only Patient" in refused.output
