"""``GET /admin/usage``: usage per organisation per day, for administrators.

The router is built by :func:`usage_router` around the administrator
dependency of the trust layer (authentication stays in one place; this module
only asks that it succeeded). The answer covers what has been flushed, so it
lags the live counts by at most the meter's flush interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from hie.dependencies import get_store
from hie.metering.service import TooManyRows, list_usage, totals
from hie.store.base import Store

#: Longest range one request may ask for.
MAX_DAYS = 366


def _parse_day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date (YYYY-MM-DD), not {value!r}") from None


def usage_router(admin: Callable[..., Any]) -> APIRouter:
    """The ``/admin/usage`` router; ``admin`` is the dependency that
    authenticates an administrator (it raises when the caller is not one)."""
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(admin)])

    @router.get("/usage")
    async def get_usage(
        organization: str | None = Query(None, description="One organisation; all if absent."),
        from_: str | None = Query(None, alias="from", description="First day, YYYY-MM-DD "
                                  "(default: 30 days before `to`)."),
        to: str | None = Query(None, description="Last day, YYYY-MM-DD (default: today, UTC)."),
        store: Store = Depends(get_store),
    ) -> dict[str, Any]:
        """Requests, resources read and written, and body bytes in and out, per
        organisation per day, with each organisation's totals for the range."""
        end = _parse_day(to, "to", datetime.now(UTC).date())
        start = _parse_day(from_, "from", end - timedelta(days=30))
        if start > end:
            raise HTTPException(400, "from must not be after to")
        if (end - start).days >= MAX_DAYS:
            raise HTTPException(400, f"the range may cover at most {MAX_DAYS} days")
        try:
            rows = await list_usage(store, organization=organization, start=start, end=end)
        except TooManyRows as exc:
            raise HTTPException(400, str(exc)) from None
        return {
            "from": start.isoformat(), "to": end.isoformat(), "organization": organization,
            "days": [r.as_json() for r in rows],
            "totals": {org: asdict(u) for org, u in sorted(totals(rows).items())},
        }

    return router
