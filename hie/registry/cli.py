"""``hie admin …``: the registry and the exchange's keys from the command line.

Each command opens the configured store (``HIE_STORE_URL``), does one thing
through :mod:`hie.registry.service` or :mod:`hie.auth`, and prints JSON (or, for
``token``, the bare token so it can be captured: ``TOKEN=$(hie admin token)``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from hie.auth import scopes
from hie.auth.config import TrustSettings
from hie.auth.jwk import InvalidKey, jwk_from_pem
from hie.auth.tokens import TokenService
from hie.registry import service
from hie.registry.models import EXCHANGE_ORGANIZATION, ROLE_ADMIN, ROLES
from hie.store import open_store
from hie.store.base import Store

T = TypeVar("T")

app = typer.Typer(help="Administer the exchange: hospitals, keys, practitioners, "
                       "accounts, tokens.", no_args_is_help=True)

#: The ``client_id`` of tokens made by ``hie admin token``.
CLI_CLIENT_ID = "hie-admin-cli"


def load_settings() -> Any:
    """The exchange's settings (a function so tests can substitute their own)."""
    from hie.config import get_settings

    return get_settings()


def _run(fn: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        store = open_store(load_settings().store_url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except service.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _echo(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read JSON from {path}: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("create-organization")
def create_organization(
        name: str = typer.Option(..., help="The hospital's name."),
        jwks: Path | None = typer.Option(None, help="JSON file with the public JWKS."),
        id: str | None = typer.Option(None, help="Organisation id (lowercase letters/digits)."),
        client_id: str | None = typer.Option(None, help="Client id (default: the id)."),
        role: list[str] = typer.Option([], help=f"Role(s) of the client: {', '.join(ROLES)}."),
) -> None:
    """Register a hospital and its public keys."""
    keys = _read_json(jwks) if jwks else None
    org = _run(lambda store: service.create_organization(
        store, name=name, jwks=keys, id=id, client_id=client_id, roles=role))
    _echo(org.public())


@app.command("add-key")
def add_key(organization: str = typer.Option(..., help="Organisation id."),
            jwk: Path | None = typer.Option(None, help="JSON file with one public JWK."),
            pem: Path | None = typer.Option(None, help="PEM file with the (public) key."),
            kid: str | None = typer.Option(None, help="Key id (with --pem)."),
            alg: str | None = typer.Option(None, help="RS384 or ES384 (with --pem)."),
            ) -> None:
    """Register one more public key of a hospital (for rotation)."""
    if (jwk is None) == (pem is None):
        typer.echo("error: give exactly one of --jwk or --pem", err=True)
        raise typer.Exit(2)
    if pem is not None:
        if not kid:
            typer.echo("error: --pem needs --kid", err=True)
            raise typer.Exit(2)
        try:
            key = jwk_from_pem(pem.read_bytes(), kid=kid, alg=alg)
        except (InvalidKey, ValueError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    else:
        key = _read_json(jwk)  # type: ignore[arg-type]
    org = _run(lambda store: service.add_key(store, organization=organization, jwk=key))
    _echo(org.public())


@app.command("remove-key")
def remove_key(organization: str = typer.Option(..., help="Organisation id."),
               kid: str = typer.Option(..., help="The key id to unregister.")) -> None:
    """Unregister a hospital's key."""
    org = _run(lambda store: service.remove_key(store, organization=organization, kid=kid))
    _echo(org.public())


@app.command("create-practitioner")
def create_practitioner(organization: str = typer.Option(..., help="Organisation id."),
                        name: str = typer.Option(..., help="The practitioner's name."),
                        id: str | None = typer.Option(None, help="Practitioner id."),
                        role: list[str] = typer.Option([], help="Role(s), e.g. "
                                                                "privacy-officer.")) -> None:
    """Register a practitioner of a hospital."""
    prac = _run(lambda store: service.create_practitioner(
        store, organization=organization, name=name, id=id, roles=role))
    _echo(prac.public())


@app.command("create-account")
def create_account(username: str = typer.Option(..., help="Portal login name."),
                   person_id: str = typer.Option(..., help="Regional person id."),
                   password: str = typer.Option(..., prompt=True, hide_input=True,
                                                confirmation_prompt=True,
                                                help="Password (prompted when omitted).")
                   ) -> None:
    """Create a patient portal account."""
    account = _run(lambda store: service.create_account(
        store, username=username, password=password, person_id=person_id))
    _echo(account.public())


@app.command("token")
def token(role: str = typer.Option(ROLE_ADMIN, help=f"One of {', '.join(ROLES)}."),
          hours: float = typer.Option(8, help="Lifetime in hours."),
          scope: str = typer.Option("", help="SMART scopes, e.g. 'system/AuditEvent.rs'.")
          ) -> None:
    """Print an access token for an administrator or privacy officer."""
    settings: TrustSettings = load_settings()
    if role not in ROLES:
        typer.echo(f"error: --role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    if not 0 < hours <= settings.admin_token_max_hours:
        typer.echo(f"error: --hours must be in (0, {settings.admin_token_max_hours}]", err=True)
        raise typer.Exit(2)
    try:
        granted = scopes.parse_scopes(scope)
    except scopes.ScopeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    access, _, _ = TokenService(settings).issue(
        client_id=CLI_CLIENT_ID, organization=EXCHANGE_ORGANIZATION,
        scope=scopes.render(granted), roles=[role], lifetime=int(hours * 3600))
    typer.echo(access)


@app.command("rotate-keys")
def rotate_keys() -> None:
    """Add a new exchange signing key; old keys verify until their tokens expire."""
    key = TokenService(load_settings()).keyring.rotate()
    typer.echo(key.kid)
