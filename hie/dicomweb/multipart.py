"""``multipart/related`` request bodies (RFC 2387), as STOW-RS sends them.

The whole body is already in memory (the app's body limit bounds it); parts
are returned as ``memoryview`` slices of it, so no part is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Most parts one request may carry.
MAX_PARTS = 10_000


class MultipartError(ValueError):
    """The body is not the multipart message its ``Content-Type`` announced."""


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str
    data: memoryview


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and the parameters of a ``Content-Type``."""
    main, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def parse(body: bytes, boundary: str, *, default_type: str) -> list[Part]:
    """Split ``body`` at ``boundary``; a part without ``Content-Type`` has
    ``default_type`` (the ``type`` parameter of the message)."""
    if not boundary or len(boundary) > 70:
        raise MultipartError("the multipart boundary is missing or longer than 70 characters")
    view = memoryview(body)
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("the body does not contain the multipart boundary")
    parts: list[Part] = []
    pos = start + len(delimiter)
    while True:
        if body[pos:pos + 2] == b"--":  # the close delimiter
            return parts
        header_end = body.find(b"\r\n\r\n", pos)
        if header_end < 0:
            raise MultipartError("a body part has no end of headers")
        headers = bytes(view[pos:header_end]).decode("latin-1").split("\r\n")
        content_type = default_type
        for line in headers:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == "content-type":
                content_type = value.strip()
        data_start = header_end + 4
        nxt = body.find(b"\r\n" + delimiter, data_start)
        if nxt < 0:
            raise MultipartError("the multipart body has no closing boundary")
        parts.append(Part(content_type, view[data_start:nxt]))
        if len(parts) > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts in one request")
        pos = nxt + 2 + len(delimiter)
