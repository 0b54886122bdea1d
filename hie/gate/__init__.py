"""The consent gate: the exchange's side of the consent service.

``consent/`` is pure of the exchange (it must not import ``hie``); this package
composes it with the document store and the trust layer:

* :mod:`hie.gate.data` — the consent service's data in the store;
* :mod:`hie.gate.app` / :mod:`hie.gate.cli` — the standalone consent service
  (``hie-consent serve``);
* here — what the exchange needs to ask for decisions: :func:`consent_client`
  (in-process when ``HIE_CONSENT_URL`` is empty, else HTTP) and
  :func:`region_organizations`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from consent.client import ConsentClient, HttpConsentClient, LocalConsentClient
from hie.auth.tokens import TokenService
from hie.gate.data import StoreConsentData
from hie.registry.models import EXCHANGE_ORGANIZATION
from hie.registry.service import list_organizations
from hie.store.base import Store

__all__ = ["DEFAULT_BREAK_GLASS_HOURS", "ROLE_EXCHANGE_SERVICE", "StoreConsentData",
           "break_glass_hours", "cached_organizations", "consent_client", "region_organizations",
           "service_token_provider"]

#: The role of the exchange itself calling the consent service's decision API.
#: Never registrable for a hospital or person (``hie.registry.models.ROLES``), so
#: only a process holding the exchange's signing keys can mint it.
ROLE_EXCHANGE_SERVICE = "exchange-service"
#: Client id and lifetime of those tokens: short, renewed well before expiry.
SERVICE_CLIENT_ID = "exchange-consent-client"
SERVICE_TOKEN_SECONDS = 120
#: Break-the-glass window when the settings do not say (issue 4: 4 hours).
DEFAULT_BREAK_GLASS_HOURS = 4.0
#: How long the exchange waits for a remote consent service before denying.
DEFAULT_CONSENT_TIMEOUT = 2.0
#: Seconds the in-process client reuses the list of the region's hospitals.
ORGANIZATIONS_TTL = 10.0


def break_glass_hours(settings: Any) -> float:
    """The break-the-glass window (``HIE_BREAK_GLASS_HOURS`` once the settings
    carry it; 4 hours otherwise)."""
    return float(getattr(settings, "break_glass_hours", DEFAULT_BREAK_GLASS_HOURS))


async def region_organizations(store: Store) -> list[str]:
    """Every registered hospital of the region (the exchange itself excluded)."""
    return [o.id for o in await list_organizations(store) if o.id != EXCHANGE_ORGANIZATION]


def cached_organizations(store: Store, *, ttl: float = ORGANIZATIONS_TTL,
                         clock: Callable[[], float] = time.monotonic
                         ) -> Callable[[], Awaitable[list[str]]]:
    """:func:`region_organizations`, re-read at most every ``ttl`` seconds: the
    directory changes rarely and decisions are frequent. Only the listing of a
    grant that covers every hospital depends on it (``all_organizations`` stays
    set), so a hospital registered a moment ago is never left out of enforcement."""
    cached: dict[str, Any] = {}

    async def organizations() -> list[str]:
        if not cached or clock() >= cached["until"]:
            cached.update(ids=await region_organizations(store), until=clock() + ttl)
        return list(cached["ids"])

    return organizations


def service_token_provider(tokens: TokenService, *, lifetime: int = SERVICE_TOKEN_SECONDS,
                           clock: Callable[[], float] = time.time) -> Callable[[], str]:
    """A function returning an ``exchange-service`` access token, minted with the
    exchange's own keys and renewed when less than half its life is left (one
    ECDSA signature per minute, not per decision)."""
    lock = threading.Lock()
    cached: dict[str, Any] = {}

    def provide() -> str:
        with lock:
            if cached and clock() < cached["renew"]:
                return cached["token"]
            token, seconds, _ = tokens.issue(
                client_id=SERVICE_CLIENT_ID, organization=EXCHANGE_ORGANIZATION, scope="",
                roles=[ROLE_EXCHANGE_SERVICE], lifetime=lifetime)
            cached.update(token=token, renew=clock() + seconds / 2)
            return token

    return provide


def consent_client(settings: Any, store: Store, *, tokens: TokenService | None = None
                   ) -> ConsentClient:
    """The exchange's consent client: in-process over ``store`` when
    ``settings.consent_url`` is empty, else HTTP to that service (authenticated
    with ``exchange-service`` tokens from ``tokens``, the exchange's token service)."""
    if not settings.consent_url:
        return LocalConsentClient(lambda: StoreConsentData(store),
                                  break_glass_hours=break_glass_hours(settings),
                                  organizations=cached_organizations(store))
    tokens = tokens or TokenService(settings)
    return HttpConsentClient(settings.consent_url, token_provider=service_token_provider(tokens),
                             timeout=float(getattr(settings, "consent_timeout",
                                                   DEFAULT_CONSENT_TIMEOUT)))
