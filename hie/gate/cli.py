"""The ``hie-consent`` command: run the consent service on its own."""

from __future__ import annotations

import typer

app = typer.Typer(help="The consent service of the regional health-record exchange.",
                  no_args_is_help=True)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to bind."),
          port: int = typer.Option(8081, help="Port to bind."),
          workers: int = typer.Option(1, help="Worker processes."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Run the consent service (decision API at /consent/decide).

    Settings come from HIE_* variables: the exchange's store and key folder."""
    import uvicorn

    from hie.logs import served_log_config

    uvicorn.run("hie.gate.app:create_consent_app", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, proxy_headers=True, access_log=False,
                log_config=served_log_config(log_level))


@app.command()
def version() -> None:
    """Print the version."""
    import hie

    typer.echo(hie.__version__)


def main() -> None:
    """Entry point of the ``hie-consent`` console script."""
    app()
