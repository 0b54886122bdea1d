"""The ``hie`` command: run the exchange and administer it."""

from __future__ import annotations

import typer

from hie.audit.cli import app as audit_app
from hie.registry.cli import app as admin_app

app = typer.Typer(help="Regional health-record exchange.", no_args_is_help=True)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to bind."),
          port: int = typer.Option(8080, help="Port to bind."),
          workers: int = typer.Option(1, help="Worker processes."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Run the exchange (FHIR API at /fhir) with the settings from HIE_* variables."""
    import uvicorn

    uvicorn.run("hie.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=True, access_log=False)


@app.command()
def version() -> None:
    """Print the version."""
    import hie

    typer.echo(hie.__version__)


app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")


def main() -> None:
    """Entry point of the ``hie`` console script."""
    app()
