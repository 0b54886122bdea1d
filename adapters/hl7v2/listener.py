"""Asyncio MLLP listener: frames in, ACKs out, messages into the outbox.

MLLP wraps each message in a start block (0x0B) and an end block (0x1C 0x0D).
Every way a peer can misbehave ends in a bounded amount of memory and time:
the stream buffer is capped at ``max_message_bytes`` (a bigger message gets AR
and the connection is closed), a message must end within ``read_timeout`` of its
first byte, a silent connection is dropped after ``idle_timeout``, and a start
block inside a message (a missing end block) is a framing error. One bad
connection never affects the others: each runs in its own task and every error
is caught at the connection boundary.

The ACK is AA only after ``outbox.put`` returned, i.e. once the message is on
disk; that is what lets the HIS forget it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.hl7v2.ack import build_ack
from adapters.hl7v2.mapping import MappingSettings, Outgoing, map_message
from adapters.hl7v2.message import (
    APPLICATION_INTERNAL_ERROR,
    Header,
    Hl7Error,
    parse,
    parse_header,
)

log = logging.getLogger(__name__)

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"


class OutboxLike(Protocol):
    """What the listener needs of ``adapters.outbox.Outbox``."""

    def put(self, *, patient_key: str, payload: bytes, kind: str = "bundle",
            source: str, after: str | None = None) -> Any: ...


@dataclass
class ListenerSettings:
    """Limits and the hospital's mapping settings."""

    max_message_bytes: int = 1 << 20
    read_timeout: float = 30.0
    idle_timeout: float = 3600.0
    write_timeout: float = 30.0
    max_connections: int = 256
    default_charset: str = "utf-8"
    source: str = "hl7v2"
    mapping: MappingSettings = field(default_factory=MappingSettings)


    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ListenerSettings:
        """Settings from ``HIE_ADAPTER_HL7V2_*`` variables, so ``hie-adapter hl7v2``
        is configured like every other adapter source (see docs/adapters-hl7v2.md)."""
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            return e.get(f"HIE_ADAPTER_HL7V2_{name}") or None

        mapping = MappingSettings(**{
            attr: value for attr, value in (
                ("mrn_system", get("MRN_SYSTEM")), ("visit_system", get("VISIT_SYSTEM")),
                ("order_system", get("ORDER_SYSTEM")),
                ("observation_system", get("OBSERVATION_SYSTEM")),
                ("local_code_system", get("LOCAL_CODE_SYSTEM")), ("tz", get("TZ")),
                ("resident_id_system", e.get("HIE_RESIDENT_ID_SYSTEM") or None))
            if value})
        limits: dict[str, Any] = {}
        for attr, name, kind in (("max_message_bytes", "MAX_MESSAGE_BYTES", int),
                                 ("read_timeout", "READ_TIMEOUT", float),
                                 ("idle_timeout", "IDLE_TIMEOUT", float),
                                 ("max_connections", "MAX_CONNECTIONS", int),
                                 ("default_charset", "DEFAULT_CHARSET", str)):
            raw = get(name)
            if raw:
                limits[attr] = kind(raw)
        return cls(mapping=mapping, **limits)


class FramingError(Exception):
    """The peer broke MLLP framing; we answer if we can and close."""

    def __init__(self, text: str, partial: bytes = b"") -> None:
        super().__init__(text)
        self.partial = partial


def _header_or_none(raw: bytes, settings: ListenerSettings) -> Header | None:
    """The MSH to mirror in an ACK, even when MSH-18 names an unknown set."""
    try:
        return parse_header(raw, default_charset=settings.default_charset)
    except Hl7Error:
        try:
            return parse_header(_without_charset(raw), default_charset=settings.default_charset)
        except Hl7Error:
            return None


def _without_charset(raw: bytes) -> bytes:
    first, sep, rest = raw.partition(b"\r")
    fields = first.split(first[3:4] or b"|")
    if len(fields) > 17:
        fields[17] = b""
    return (first[3:4] or b"|").join(fields) + sep + rest


def process_sync(raw: bytes, settings: ListenerSettings) -> Outgoing:
    """Parse and map; raises :class:`Hl7Error` for anything the ACK must refuse."""
    msg = parse(raw, default_charset=settings.default_charset)
    return map_message(msg, settings.mapping)


async def handle_message(raw: bytes, outbox: OutboxLike, settings: ListenerSettings) -> bytes:
    """One message in, its encoded ACK out."""
    header = _header_or_none(raw, settings)
    try:
        # Parsing, mapping and the fsync of put() are off the event loop so that
        # one large message never stalls the other connections.
        out = await asyncio.to_thread(process_sync, raw, settings)
    except Hl7Error as exc:
        log.info("HL7 message %s refused (%s): %s", header and header.control_id,
                 exc.ack_code, exc.text)
        return build_ack(header, exc.ack_code, text=exc.text, error_code=exc.code,
                         location=exc.location)
    except Exception:  # a mapping bug must not take the listener down
        log.exception("HL7 message %s: internal error", header and header.control_id)
        return build_ack(header, "AE", text="internal error in the adapter",
                         error_code=APPLICATION_INTERNAL_ERROR)
    try:
        kwargs = {"patient_key": out.patient_key, "payload": out.payload, "kind": out.kind,
                  "source": settings.source, "after": out.after}
        if inspect.iscoroutinefunction(outbox.put):
            await outbox.put(**kwargs)
        else:
            await asyncio.to_thread(lambda: outbox.put(**kwargs))
    except Exception:
        log.exception("HL7 message %s: outbox write failed", header and header.control_id)
        return build_ack(header, "AE", text="message could not be stored; send it again",
                         error_code=APPLICATION_INTERNAL_ERROR)
    return build_ack(header, "AA")


async def read_frame(reader: asyncio.StreamReader, settings: ListenerSettings) -> bytes | None:
    """The next message between SB and EB CR; None at a clean end of stream."""
    try:
        byte = await asyncio.wait_for(reader.readexactly(1), settings.idle_timeout)
    except asyncio.IncompleteReadError:
        return None
    async with asyncio.timeout(settings.read_timeout):
        skipped = 0
        while byte != SB:  # tolerate line breaks some senders put between frames
            if byte not in b"\r\n \t" or skipped > 1024:
                raise FramingError("data outside an MLLP block")
            skipped += 1
            byte = await reader.readexactly(1)
        try:
            frame = await reader.readuntil(EB + CR)
        except asyncio.LimitOverrunError as exc:
            head = await reader.read(min(exc.consumed, 64 * 1024))
            raise FramingError(f"message larger than {settings.max_message_bytes} bytes",
                               head) from exc
    body = frame[:-2]
    if SB in body or EB in body:
        cut = body.split(SB)[0].split(EB)[0]
        raise FramingError("MLLP end block missing before the next message", cut)
    return body


async def _write(writer: asyncio.StreamWriter, ack: bytes, settings: ListenerSettings) -> None:
    writer.write(SB + ack + EB + CR)
    await asyncio.wait_for(writer.drain(), settings.write_timeout)


class Listener:
    """The MLLP server's connection handler and its shared state."""

    def __init__(self, outbox: OutboxLike, settings: ListenerSettings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.connections += 1
        try:
            if self.connections > self.settings.max_connections:
                log.warning("refusing %s: %d connections open", peer, self.connections)
                return
            await self._converse(reader, writer, peer)
        except Exception:
            log.exception("MLLP connection %s failed", peer)
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        peer: object) -> None:
        while True:
            try:
                raw = await read_frame(reader, self.settings)
            except FramingError as exc:
                log.warning("MLLP %s: %s; closing", peer, exc)
                header = _header_or_none(exc.partial, self.settings) if exc.partial else None
                if exc.partial:
                    with contextlib.suppress(Exception):
                        await _write(writer, build_ack(header, "AR", text=str(exc),
                                                       error_code="100"), self.settings)
                return
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                log.info("MLLP %s: message never ended or peer went away; closing", peer)
                return
            if raw is None:
                return
            ack = await handle_message(raw, self.outbox, self.settings)
            await _write(writer, ack, self.settings)


async def start_server(host: str, port: int, *, outbox: OutboxLike,
                       settings: ListenerSettings | None = None) -> asyncio.Server:
    """Bind and start accepting; ``port=0`` picks a free port (see ``server.sockets``)."""
    s = settings or ListenerSettings()
    # The stream buffer limit is what bounds memory per connection: readuntil()
    # raises LimitOverrunError instead of growing past it.
    return await asyncio.start_server(Listener(outbox, s), host, port,
                                      limit=s.max_message_bytes + 2)


async def serve(host: str, port: int, *, outbox: OutboxLike,
                settings: ListenerSettings | None = None) -> None:
    """Run the MLLP listener until cancelled (what ``hie-adapter hl7v2 --listen`` calls);
    without ``settings`` they come from the environment."""
    settings = settings or ListenerSettings.from_env()
    server = await start_server(host, port, outbox=outbox, settings=settings)
    log.info("HL7 v2 MLLP listener on %s", [s.getsockname() for s in server.sockets])
    async with server:
        await server.serve_forever()
