"""The ``hie`` command: run the exchange and administer it."""

from __future__ import annotations

from pathlib import Path

import typer

from hie.audit.cli import app as audit_app
from hie.identity.cli import app as identity_app
from hie.registry.cli import app as admin_app

app = typer.Typer(help="Regional health-record exchange.", no_args_is_help=True)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to bind."),
          port: int = typer.Option(8080, help="Port to bind."),
          workers: int = typer.Option(1, help="Worker processes."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Run the exchange (FHIR API at /fhir) with the settings from HIE_* variables.

    With more than one worker, the workers take turns accepting connections
    (hie/serving.py), so the few long-lived connections of hospital systems
    spread over them."""
    import uvicorn

    from hie.logs import served_log_config
    from hie.serving import serve as run

    config = uvicorn.Config("hie.app:served_app", factory=True, host=host, port=port,
                            workers=workers, log_level=log_level, proxy_headers=True,
                            access_log=False, log_config=served_log_config(log_level))
    code = run(config)
    if code:
        raise typer.Exit(code)


@app.command()
def demo(credentials: Path = typer.Option(Path("var/demo-credentials.json"),
                                          help="Where to write the credentials file."),
         ) -> None:
    """Seed a small region (three hospitals, their doctors, patients with records)
    into the configured store and write the credentials to act as each of them."""
    import asyncio

    from hie.app import write_hooks
    from hie.config import get_settings
    from hie.demo import seed, write_credentials
    from hie.store import open_store

    settings = get_settings()

    async def run() -> dict:
        store = open_store(settings.store_url)
        await store.open()
        try:
            return await seed(store, settings, hooks=write_hooks(settings))
        finally:
            await store.close()

    creds = asyncio.run(run())
    write_credentials(creds, credentials)
    typer.echo(f"Seeded {len(creds['hospitals'])} hospitals and {len(creds['patients'])} "
               f"patients; credentials written to {credentials}")


@app.command()
def version() -> None:
    """Print the version."""
    import hie

    typer.echo(hie.__version__)


app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
app.add_typer(identity_app, name="identity")


def main() -> None:
    """Entry point of the ``hie`` console script."""
    app()
