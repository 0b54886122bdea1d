"""Building response Bundles from stored JSON without re-parsing it.

Stored resources are JSON bytes; a searchset or history Bundle is assembled
around them byte-wise, so a page of 1,000 resources costs no JSON round trip.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from hie.store.base import StoredResource
from hie.store.query import Cursor

FHIR_JSON = "application/fhir+json"


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(stamp: str) -> str:
    """Return a store timestamp as an HTTP date (``Last-Modified``)."""
    dt = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return format_datetime(dt, usegmt=True)


def resource_headers(rec: StoredResource | Any, base: str) -> dict[str, str]:
    """ETag, Last-Modified and Content-Location of a stored version."""
    return {
        "ETag": etag(rec.version),
        "Last-Modified": http_date(rec.last_updated),
        "Content-Location": f"{base}/{rec.resource_type}/{rec.id}/_history/{rec.version}",
    }


def encode_cursor(cursor: Cursor) -> str:
    raw = f"{cursor.after_seq}.{cursor.offset}.{cursor.snapshot_seq or 0}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor | None:
    """Parse a ``_cursor`` value; None when it is malformed."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        a, o, s = (int(x) for x in raw.split("."))
    except (ValueError, UnicodeDecodeError):
        return None
    if a < 0 or o < 0 or s < 0:
        return None
    return Cursor(after_seq=a, offset=o, snapshot_seq=s or None)


def link_url(base: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    qs = urlencode(list(params), safe="|:,/")
    return f"{base}/{path}" + (f"?{qs}" if qs else "")


def bundle_bytes(bundle_type: str, *, links: list[tuple[str, str]], entries: list[bytes],
                 total: int | None = None) -> bytes:
    """Assemble a Bundle from ready-made entry JSON fragments."""
    head: dict[str, Any] = {"resourceType": "Bundle", "type": bundle_type}
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    prefix = orjson.dumps(head)[:-1]
    if not entries:
        return prefix + b"}"
    return prefix + b',"entry":[' + b",".join(entries) + b"]}"


def search_entry(base: str, rec: StoredResource, mode: str, body: bytes | None = None) -> bytes:
    """One searchset entry: fullUrl, resource and search mode."""
    url = f"{base}/{rec.resource_type}/{rec.id}"
    return (b'{"fullUrl":' + orjson.dumps(url) + b',"resource":' + (body or rec.body)
            + b',"search":{"mode":"' + mode.encode() + b'"}}')


def history_entry(base: str, rec: StoredResource, body: bytes | None = None) -> bytes:
    """One history entry with its request and response."""
    url = f"{rec.resource_type}/{rec.id}"
    if rec.deleted:
        method, status = "DELETE", "204 No Content"
    elif rec.version == 1:
        method, status = "POST", "201 Created"
    else:
        method, status = "PUT", "200 OK"
    request = {"method": method, "url": url if method != "POST" else rec.resource_type}
    response = {"status": status, "etag": etag(rec.version),
                "lastModified": rec.last_updated + "Z"}
    out = b'{"fullUrl":' + orjson.dumps(f"{base}/{url}")
    if not rec.deleted:
        out += b',"resource":' + (body or rec.body)
    return (out + b',"request":' + orjson.dumps(request)
            + b',"response":' + orjson.dumps(response) + b"}")
