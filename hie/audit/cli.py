"""``hie audit …``: check the audit chain from the command line.

A typer sub-app; ``hie/cli.py`` mounts it with
``app.add_typer(audit_cli.app, name="audit")``.
"""

from __future__ import annotations

import asyncio

import orjson
import typer

from hie.audit.verify import VerifyResult, result_json, verify

app = typer.Typer(help="Audit log: check the hash chain.", no_args_is_help=True)


@app.callback()
def audit() -> None:
    """Audit log: check the hash chain."""


async def _run_verify(store_url: str, anchor: tuple[int, str] | None) -> VerifyResult:
    from hie.store import open_store

    store = open_store(store_url)
    await store.open()
    try:
        return await verify(store, anchor=anchor)
    finally:
        await store.close()


def _parse_anchor(value: str | None) -> tuple[int, str] | None:
    if not value:
        return None
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter("expected SEQUENCE:HASH (the head printed by an earlier run)")
    return int(seq), digest.lower()


@app.command("verify")
def verify_command(
    store_url: str | None = typer.Option(
        None, "--store-url", help="Store to check (default: HIE_STORE_URL)."),
    anchor: str | None = typer.Option(
        None, "--anchor", help="SEQUENCE:HASH of a head recorded earlier; it must still hold."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check every audit record against the hash chain.

    Exits 0 when the chain is intact, 1 when a record was changed or removed
    (the first one is printed, with what is stored there).
    """
    if store_url is None:
        from hie.config import get_settings

        store_url = get_settings().store_url
    result = asyncio.run(_run_verify(store_url, _parse_anchor(anchor)))
    if as_json:
        typer.echo(orjson.dumps(result_json(result), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(result.describe())
        if not result.intact and result.body is not None:
            typer.echo(result.body.decode("utf-8", "replace"))
    raise typer.Exit(0 if result.intact else 1)
