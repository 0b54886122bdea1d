"""``hie identity …``: the review queue and link administration from a shell.

A typer sub-app; ``hie/cli.py`` mounts it with
``app.add_typer(identity_cli.app, name="identity")``. Every change is written
with its audit records in one transaction, exactly as the admin API does; the
``--actor`` names the administrator in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import typer

from hie.identity import admin as admin_service
from hie.identity import service
from hie.identity.model import LinkEvent
from hie.store.base import Store, Transaction

T = TypeVar("T")

app = typer.Typer(help="Regional identity: review queue, link, unlink, merge.",
                  no_args_is_help=True)

STORE_OPTION = typer.Option(None, "--store-url", help="Store (default: HIE_STORE_URL).")
ACTOR_OPTION = typer.Option(..., "--actor", help="Who decides (named in the audit trail).")


@app.callback()
def identity() -> None:
    """Regional identity: review queue, link, unlink, merge."""


def _run(store_url: str | None, fn: Callable[[Store], Awaitable[T]]) -> T:
    from hie.config import get_settings
    from hie.store import open_store

    async def main() -> T:
        store = open_store(store_url or get_settings().store_url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _change(store_url: str | None, actor: str,
            fn: Callable[[Transaction], Awaitable[list[LinkEvent]]]) -> None:
    from hie.identity.router import audit_sink

    async def go(store: Store) -> list[LinkEvent]:
        async def run(tx: Transaction) -> list[LinkEvent]:
            events = await fn(tx)
            await audit_sink(tx, events, SimpleNamespace(admin_id=actor, organization=None))
            return events

        return await store.transact(run)

    try:
        events = _run(store_url, go)
    except service.IdentityError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for e in events:
        typer.echo(f"{e.action}: Patient/{e.patient_id} -> person {e.person_id}"
                   + (f" (was {e.previous_person_id})" if e.previous_person_id else ""))


@app.command("reviews")
def reviews(status: str = typer.Option("open", help="open, linked, separate, obsolete"),
            limit: int = typer.Option(50), store_url: str | None = STORE_OPTION) -> None:
    """List review items as JSON lines."""
    items, _ = _run(store_url, lambda s: admin_service.list_reviews(s, status=status,
                                                                    limit=limit))
    for item in items:
        typer.echo(json.dumps(item.to_json(), ensure_ascii=False))


@app.command("show")
def show(patient_id: str, store_url: str | None = STORE_OPTION) -> None:
    """Print a Patient's person and the Patients linked to it."""
    async def go(store: Store) -> dict[str, Any]:
        return {"patient": patient_id, "person": await service.person_id_of(store, patient_id),
                "patients": await service.linked_patient_ids(store, patient_id)}

    typer.echo(json.dumps(_run(store_url, go)))


@app.command("link")
def link(patient_id: str, target_patient_id: str, actor: str = ACTOR_OPTION,
         reason: str | None = typer.Option(None), store_url: str | None = STORE_OPTION) -> None:
    """Declare PATIENT_ID the same person as TARGET_PATIENT_ID."""
    _change(store_url, actor, lambda tx: admin_service.link_patients(
        tx, patient_id=patient_id, target_patient_id=target_patient_id, actor=actor,
        reason=reason))


@app.command("unlink")
def unlink(patient_id: str, actor: str = ACTOR_OPTION,
           reason: str | None = typer.Option(None), store_url: str | None = STORE_OPTION) -> None:
    """Split PATIENT_ID off into a person of its own."""
    _change(store_url, actor, lambda tx: admin_service.unlink_patient(
        tx, patient_id=patient_id, actor=actor, reason=reason))


@app.command("merge")
def merge(source: str = typer.Option(..., help="The hospital's meta.source."),
          prior: str = typer.Option(..., help="Patient id merged away."),
          surviving: str = typer.Option(..., help="Patient id that survives."),
          actor: str = ACTOR_OPTION, store_url: str | None = STORE_OPTION) -> None:
    """Record an HL7 A40 merge of two Patients of one hospital."""
    _change(store_url, actor, lambda tx: admin_service.merge(
        tx, source=source, prior_patient_id=prior, surviving_patient_id=surviving, actor=actor))


@app.command("decide")
def decide(review_id: str, decision: str = typer.Argument(..., help="link or separate"),
           person: str | None = typer.Option(None, help="Candidate person (default: best)."),
           actor: str = ACTOR_OPTION, store_url: str | None = STORE_OPTION) -> None:
    """Decide a review item."""
    if decision not in ("link", "separate"):
        raise typer.BadParameter("decision is link or separate")
    _change(store_url, actor, lambda tx: admin_service.resolve_review(
        tx, review_id=review_id, decision=decision, actor=actor,  # type: ignore[arg-type]
        person_id=person))
