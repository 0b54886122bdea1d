"""A short route for the two hottest FHIR reads: search and read by id.

FastAPI matches a request against its routes through its included-router
layers and then solves the route's dependencies; for ``GET /fhir/{type}`` that
costs ~0.15 ms on a 2-core VM — as much as the store needs to answer a
selective search (``benchmarks/bench_search.py``). The lane is two plain
Starlette routes put in front of every other route. They call the very route
functions of :mod:`hie.fhir.router` with the same :func:`~hie.fhir.access.access`
note, so authentication, consent, audit, metering and errors (raised inside
the app's exception middleware, as for any route) are those of the FastAPI
routes; only the dispatch is shorter.

The lane takes only what it can tell apart from other routes by the path:

* ``GET /fhir/{type}`` where the type starts with a capital letter (so not
  ``/fhir/metadata``, ``/fhir/_history`` or ``/fhir/.well-known/…``);
* ``GET /fhir/{type}/{id}`` where the id is a FHIR id (``[A-Za-z0-9.-]{1,64}``:
  so not ``_history``, ``_search`` or a ``$``-operation).

Anything else, including ``HEAD`` and malformed ids, goes on to the FastAPI
routes, which stay declared for the OpenAPI document and answer exactly as
before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from hie.fhir import router as fhir_routes
from hie.fhir.access import access

TYPE = "[A-Z][A-Za-z]{0,63}"
ID = "[A-Za-z0-9.-]{1,64}"


class LaneRoute(Route):
    """A GET-only route on the FastAPI route's ``template`` (so metrics name
    it the same), matching only paths whose parameters fit ``patterns``."""

    def __init__(self, template: str, endpoint: Callable[[Request], Awaitable[Response]],
                 **patterns: str) -> None:
        super().__init__(template, endpoint, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}  # Route adds HEAD; the FastAPI routes do not take it
        regex = template
        for name, pattern in patterns.items():
            regex = regex.replace("{" + name + "}", f"(?P<{name}>{pattern})")
        self.path_regex = re.compile(f"^{regex}$")

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        # Other methods are not the lane's at all (not even a partial match,
        # which would answer 405 with the lane's Allow header).
        if scope.get("method") != "GET":
            return Match.NONE, {}
        match, child = super().matches(scope)
        if child:
            child["route"] = self
        return match, child


async def _search(request: Request) -> Response:
    params = request.path_params
    return await fhir_routes.search(params["resource_type"], request, await access(request))


async def _read(request: Request) -> Response:
    params = request.path_params
    return await fhir_routes.read(params["resource_type"], params["id"],
                                  await access(request))


def lane_routes() -> list[Route]:
    """The lane's routes, in the order they are tried."""
    return [LaneRoute("/fhir/{resource_type}", _search, resource_type=TYPE),
            LaneRoute("/fhir/{resource_type}/{id}", _read, resource_type=TYPE, id=ID)]


def install(app: FastAPI) -> None:
    """Put the lane in front of ``app``'s routes (after every router is included)."""
    app.router.routes[:0] = lane_routes()
