"""``hie-adapter``: one command per hospital source, plus ``status`` and ``requeue``.

Every pushing source takes ``--exchange URL --client-id ID --key PEM_FILE --kid KID
--outbox PATH`` (or ``HIE_ADAPTER_*``, see ``adapters.config``). Sources put
messages into the outbox; a pusher thread in the same process drains it.
Sub-commands of other sources import their module lazily, so that this command
works whether or not they are installed:

- ``hl7v2 --listen HOST:PORT`` → ``adapters.hl7v2.listener.serve``
- ``dicom --listen HOST:PORT --ae-title AET`` → ``adapters.sources.dicom_scp.serve``;
  ``dicom --pacs URL`` → ``adapters.sources.dicom_poller.PacsPoller``
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from adapters.client import ExchangeClient
from adapters.config import AdapterSettings
from adapters.outbox import Outbox
from adapters.pusher import Pusher
from adapters.sources.fhir_files import FhirFolder

app = typer.Typer(help="Hospital adapter: push a hospital's records to the exchange.",
                  no_args_is_help=True, add_completion=False)

Exchange = Annotated[str | None, typer.Option("--exchange", help="exchange base URL "
                                              "[env HIE_ADAPTER_EXCHANGE]")]
ClientId = Annotated[str | None, typer.Option("--client-id", help="[env HIE_ADAPTER_CLIENT_ID]")]
KeyFile = Annotated[Path | None, typer.Option("--key", help="the hospital's private key (PEM) "
                                              "[env HIE_ADAPTER_KEY_FILE]")]
Kid = Annotated[str | None, typer.Option("--kid", help="[env HIE_ADAPTER_KID]")]
OutboxPath = Annotated[Path | None, typer.Option("--outbox", help="outbox SQLite file "
                                                 "[env HIE_ADAPTER_OUTBOX]")]


def _settings(exchange: str | None, client_id: str | None, key: Path | None, kid: str | None,
              outbox: Path | None, *, push: bool) -> AdapterSettings:
    settings = AdapterSettings.resolve(exchange=exchange, client_id=client_id, key_file=key,
                                       kid=kid, outbox=outbox)
    missing = settings.missing_for_push() if push else []
    if missing:
        typer.echo(f"missing: {', '.join(missing)} (or their HIE_ADAPTER_* variables)",
                   err=True)
        raise typer.Exit(2)
    return settings


def _client(settings: AdapterSettings) -> ExchangeClient:
    assert settings.exchange and settings.client_id and settings.key_file and settings.kid
    return ExchangeClient(settings.exchange, client_id=settings.client_id,
                          private_pem=settings.key_file.read_text(), kid=settings.kid)


@contextmanager
def _pushing(settings: AdapterSettings, outbox: Outbox) -> Iterator[Pusher]:
    """The pusher running in a thread while the command's source runs; stopped (its
    client closed) when the source ends, an interrupt being a normal end."""
    pusher = Pusher(outbox, _client(settings))
    # Every command that sends starts here, its modules loaded: freeze what is alive
    # now out of the collector's way. Each message keeps thousands of objects alive
    # long enough to be promoted (a DICOM instance's data set most of all), and each
    # full collection would otherwise walk every module, pydicom's dictionary included.
    gc.collect()
    gc.freeze()
    pusher.start()
    try:
        yield pusher
    except KeyboardInterrupt:
        pass
    finally:
        pusher.stop()
        pusher.client.close()


def _drained(pusher: Pusher, outbox: Outbox) -> list[Any]:
    """Let the pusher settle everything queued, then return the dead letters."""
    pusher.finish()  # the pusher returns once everything queued is settled
    assert pusher.thread is not None
    pusher.thread.join()
    return outbox.status().dead_letters


@app.command()
def fhir(path: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
         watch: Annotated[bool, typer.Option("--watch", help="keep polling for new files")]
         = False,
         interval: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
         id_system: Annotated[str | None, typer.Option(
             "--id-system", envvar="HIE_ADAPTER_FHIR_ID_SYSTEM",
             help="identifier system (a URI naming the exporting system) under which a "
                  "resource without identifier is sent with its local id, as Type/id: "
                  "a conditional update instead of a POST, so a re-send writes nothing "
                  "twice")] = None,
         exchange: Exchange = None, client_id: ClientId = None, key: KeyFile = None,
         kid: Kid = None, outbox: OutboxPath = None) -> None:
    """Push a folder of FHIR Bundles (*.json) or NDJSON (*.ndjson); files read are moved
    to PATH/.done/, unreadable ones to PATH/.failed/."""
    settings = _settings(exchange, client_id, key, kid, outbox, push=True)
    box = Outbox(settings.outbox)
    source = FhirFolder(path, box, progress=not watch, id_system=id_system)
    with _pushing(settings, box) as pusher:
        if watch:
            while True:
                source.run_once(settle=1.0)
                time.sleep(interval)
        start = time.monotonic()
        source.run_once()
        dead = _drained(pusher, box)  # a backfill: done once everything is settled
        summary = source.summary
        typer.echo(f"{summary.line()}; {pusher.sent} message(s) delivered, "
                   f"{len(dead)} dead letter(s), {time.monotonic() - start:.1f} s", err=True)
        for failure in summary.failures:
            typer.echo(f"failed: {failure}", err=True)
        if summary.failed or dead:
            raise typer.Exit(1)


@app.command()
def status(outbox: OutboxPath = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Queue depth, oldest waiting message, last error, dead letters."""
    settings = _settings(None, None, None, None, outbox, push=False)
    state = Outbox(settings.outbox).status()
    if as_json:
        typer.echo(json.dumps(state.as_dict(), ensure_ascii=False, indent=2))
        return
    age = "-" if state.oldest_age_seconds is None else f"{state.oldest_age_seconds:.0f} s"
    typer.echo(f"waiting: {state.depth}\noldest waiting: {age}\ndelivered: {state.delivered}\n"
               f"last error: {state.last_error or '-'}\ndead letters: {len(state.dead_letters)}")
    for d in state.dead_letters:
        typer.echo(f"  {d.id}\t{d.source}\t{d.error}")


@app.command()
def requeue(id: Annotated[int, typer.Argument(help="dead letter id (see status)")],
            outbox: OutboxPath = None) -> None:
    """Send a dead letter again, after the cause was fixed."""
    settings = _settings(None, None, None, None, outbox, push=False)
    if not Outbox(settings.outbox).requeue(id):
        typer.echo(f"no dead letter {id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"message {id} queued again")


@app.command()
def hl7v2(listen: Annotated[str, typer.Option(help="HOST:PORT of the MLLP listener")],
          exchange: Exchange = None, client_id: ClientId = None, key: KeyFile = None,
          kid: Kid = None, outbox: OutboxPath = None) -> None:
    """HL7 v2 over MLLP from the hospital's HIS/LIS (adapters.hl7v2); the listener ACKs
    (AA) a message once it is in the outbox, the pusher thread sends it on."""
    import asyncio  # here: the other commands start faster without it

    serve = _optional("adapters.hl7v2.listener", "serve")
    settings = _settings(exchange, client_id, key, kid, outbox, push=True)
    box = Outbox(settings.outbox)
    host, _, port = listen.rpartition(":")
    with _pushing(settings, box):
        asyncio.run(serve(host or "127.0.0.1", int(port), outbox=box))


@app.command()
def dicom(listen: Annotated[str | None, typer.Option(help="HOST:PORT of the C-STORE SCP")]
          = None,
          ae_title: Annotated[str, typer.Option("--ae-title", help="the SCP's AE title; "
                                                "senders must call it")] = "HIE_ADAPTER",
          retrieve_base: Annotated[str | None, typer.Option(
              "--retrieve-base", help="WADO-RS base of the PACS archiving what the SCP "
              "receives (RetrieveURL/BulkDataURI); without it bulk data is omitted")] = None,
          pacs: Annotated[str | None, typer.Option(help="DICOMweb base of a PACS to poll "
                                                   "instead of listening")] = None,
          interval: Annotated[float, typer.Option(help="seconds between PACS polls")] = 30.0,
          once: Annotated[bool, typer.Option("--once", help="poll the PACS once, send, "
                                             "exit")] = False,
          exchange: Exchange = None, client_id: ClientId = None, key: KeyFile = None,
          kid: Kid = None, outbox: OutboxPath = None) -> None:
    """DICOM metadata (pixels stay at the hospital): a C-STORE SCP (--listen) answering
    success once an instance is in the outbox, or a DICOMweb PACS poller (--pacs)."""
    if (listen is None) == (pacs is None):
        typer.echo("give exactly one of --listen HOST:PORT or --pacs URL", err=True)
        raise typer.Exit(2)
    settings = _settings(exchange, client_id, key, kid, outbox, push=True)
    if listen is not None:
        serve = _optional("adapters.sources.dicom_scp", "serve")
        scp_settings = _optional("adapters.sources.dicom_scp", "ScpSettings")(
            ae_title=ae_title, retrieve_base=retrieve_base)
    else:
        poller_class = _optional("adapters.sources.dicom_poller", "PacsPoller")
    box = Outbox(settings.outbox)
    with _pushing(settings, box) as pusher:
        if listen is not None:
            host, _, port = listen.rpartition(":")
            serve(host or "127.0.0.1", int(port), outbox=box, settings=scp_settings)
            return
        poller = poller_class(pacs, box)
        if not once:
            poller.run(interval=interval)
            return
        summary = poller.poll_once()
        dead = _drained(pusher, box)
        typer.echo(f"{summary.line()}; {pusher.sent} instance(s) delivered, "
                   f"{len(dead)} dead letter(s)", err=True)
        if summary.failed or dead:
            raise typer.Exit(1)


def _optional(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        typer.echo(f"{module}.{name} is not available in this installation", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
