"""How the exchange reaches the consent service: one small interface, two transports.

:class:`ConsentClient` is the whole boundary (like httpx's ``BaseTransport``):
``decide(request) -> DecisionResponse``. :class:`LocalConsentClient` calls
:func:`consent.service.decide` in-process over a :class:`~consent.data.ConsentData`;
:class:`HttpConsentClient` posts the request to a standalone consent service
(``hie-consent serve``) at ``{base}/consent/decide``.

Fail closed: when the remote service cannot answer — connection refused,
timeout, an error status, an answer that is not a valid ``DecisionResponse`` —
the HTTP client returns :func:`unavailable_decision`, a deny that shows the
requester only its own records, and logs the failure without the token or the
body. It never raises and never allows. The in-process client lets errors of
the store propagate instead: the exchange's request then fails as a whole
(503), which denies as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import httpx
from pydantic import ValidationError

from consent import service
from consent.data import ConsentData
from schemas.consent import MASK_RESIDENT_ID, Basis, DecisionRequest, DecisionResponse
from schemas.sensitivity import SENSITIVE_CODES

log = logging.getLogger("consent.client")

#: The decision API's path under the consent service's base URL.
DECIDE_PATH = "/consent/decide"


class ConsentClient(Protocol):
    """What the exchange needs of the consent service."""

    async def decide(self, request: DecisionRequest) -> DecisionResponse:
        """What ``request`` may see of the patient's records, now."""
        ...


def unavailable_decision(request: DecisionRequest, why: str) -> DecisionResponse:
    """The deny given when the consent service cannot answer: the requester's own
    records only, every sensitive category hidden, resident IDs masked."""
    own = request.organization
    return DecisionResponse(
        permit=False, visible_organizations=[own], hidden_labels=sorted(SENSITIVE_CODES),
        masks=[MASK_RESIDENT_ID],
        basis=[Basis(code="own-records", effect="permit",
                     text=f"{own} always sees the records it wrote itself"),
               Basis(code="consent-unavailable", effect="deny",
                     text=f"The consent service is unavailable ({why}), so nothing beyond "
                          "the requester's own records is shown")])


class LocalConsentClient:
    """The consent service in-process: decisions over ``data_factory()``.

    ``organizations`` lists every hospital of the region (awaited per decision,
    so a newly registered hospital counts at once)."""

    def __init__(self, data_factory: Callable[[], ConsentData], *, break_glass_hours: float,
                 organizations: Callable[[], Awaitable[list[str]]],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.data_factory = data_factory
        self.break_glass_hours = break_glass_hours
        self.organizations = organizations
        self.clock = clock

    async def decide(self, request: DecisionRequest) -> DecisionResponse:
        return await service.decide(self.data_factory(), request, now=self.clock(),
                                    break_glass_hours=self.break_glass_hours,
                                    organizations=await self.organizations())

    async def aclose(self) -> None:
        """Nothing to release (the data's store belongs to the caller)."""


class HttpConsentClient:
    """A remote consent service over HTTP (httpx), failing closed.

    ``token_provider`` returns the bearer token the exchange authenticates with
    (an ``exchange-service`` access token); it is called per request so it can
    renew. ``transport`` is for tests (``httpx.MockTransport``)."""

    def __init__(self, base_url: str, *, token_provider: Callable[[], str],
                 timeout: float = 2.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.url = base_url.rstrip("/") + DECIDE_PATH
        self.token_provider = token_provider
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport,
                                       follow_redirects=False)

    async def decide(self, request: DecisionRequest) -> DecisionResponse:
        started = time.perf_counter()
        why: str
        try:
            headers = {"Authorization": f"Bearer {self.token_provider()}",
                       "Accept": "application/json"}
            response = await self._http.post(self.url, content=request.model_dump_json(),
                                             headers={**headers,
                                                      "Content-Type": "application/json"})
            if response.status_code == 200:
                return DecisionResponse.model_validate_json(response.content)
            why = f"HTTP {response.status_code}"
        except httpx.TimeoutException:
            why = "timeout"
        except httpx.HTTPError as exc:
            why = f"connection failed: {type(exc).__name__}"
        except (ValidationError, ValueError):
            why = "malformed answer"
        except Exception as exc:  # fail closed on anything, including the token provider
            why = f"unexpected {type(exc).__name__}"
        # no token, no body, no person: the failure and who was denied
        log.warning("consent service unavailable (%s) after %.0f ms; %s sees only its own "
                    "records", why, (time.perf_counter() - started) * 1000,
                    request.organization)
        return unavailable_decision(request, why)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
