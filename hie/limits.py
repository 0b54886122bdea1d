"""Request body size limit, as plain ASGI middleware.

A body larger than ``max_bytes`` is refused with 413 before it is read into
memory: at once when ``Content-Length`` says so, otherwise as soon as the
streamed body passes the limit (:class:`BodyTooLarge` is raised from
``receive`` and rendered by the app's exception handler).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes")
        self.limit = limit


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, too_large: ASGIApp) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large  # answers a request whose Content-Length is too big

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self.too_large(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)
