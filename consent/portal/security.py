"""The portal's defences: server-side sessions, CSRF tokens and login rate limits.

Why each is shaped the way it is:

* **Sessions** are random ids (256 bits from :mod:`secrets`) naming state kept on
  the server, never data in the cookie: logging out or expiring a session
  really ends it, and nothing in the cookie can be forged or replayed after
  that. A session ends after :attr:`PortalConfig.session_idle` without use and
  at the latest :attr:`PortalConfig.session_max` after login. The id changes
  at login (no session fixation). Sessions live in this process: a portal run
  by several workers needs sticky sessions or a shared store (see
  ``docs/portal.md``).
* **CSRF**: every session carries a random token that every POST form echoes
  (synchroniser token). The login form has no session yet, so it uses a
  double-submit cookie: a random value in an HttpOnly, SameSite=Strict cookie
  that the form must repeat. Tokens are compared in constant time.
* **Rate limits** count *failed* logins per username and per client address in
  a sliding window; once either reaches the limit, every login attempt for it
  is refused with 429 until the window passes — even a correct password, or
  guessing would go on. A success clears the username's count, not the
  address's: otherwise an attacker could reset their address by logging into
  an account of their own between guesses.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: Keys the limiter holds before sweeping stale ones (bounds memory under a spray).
_MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """Settings of one portal (the defaults are what the exchange runs with)."""

    session_idle: float = 30 * 60  # seconds without a request before a session ends
    session_max: float = 8 * 3600  # seconds after login a session ends regardless
    max_failures: int = 5  # failed logins per username / per address …
    failure_window: float = 15 * 60  # … within this many seconds
    secure_cookies: bool | None = None  # None: when the request (or base URL) is https
    base_url: str | None = None  # the public base URL, to decide ``Secure`` behind a proxy
    break_glass_hours: float = 4  # passed to the decision engine for the preview
    page_size: int = 25  # access-log rows per page
    clock: Callable[[], float] = time.monotonic


@dataclass(slots=True)
class Session:
    """One logged-in person."""

    id: str
    person: str
    csrf: str
    created: float
    last_seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, message key)


class SessionStore:
    """Sessions by id, expired lazily on lookup and swept on login."""

    def __init__(self, config: PortalConfig) -> None:
        self._config = config
        self._sessions: dict[str, Session] = {}

    def create(self, person: str) -> Session:
        """Start a session for ``person`` (a fresh id and CSRF token)."""
        now = self._config.clock()
        self._sweep(now)
        session = Session(id=secrets.token_urlsafe(32), person=person,
                          csrf=secrets.token_urlsafe(32), created=now, last_seen=now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, touched; None when unknown or expired."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._config.clock()
        if self._expired(session, now):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def end(self, session_id: str | None) -> None:
        """Forget a session (logout)."""
        if session_id:
            self._sessions.pop(session_id, None)

    def _expired(self, session: Session, now: float) -> bool:
        return (now - session.last_seen >= self._config.session_idle
                or now - session.created >= self._config.session_max)

    def _sweep(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if self._expired(s, now)]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Whether a submitted CSRF token equals the expected one (constant time)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def new_token() -> str:
    """A fresh random token (login CSRF cookie)."""
    return secrets.token_urlsafe(32)


class LoginLimiter:
    """Failed logins per key (``user:…``, ``addr:…``) in a sliding window."""

    def __init__(self, config: PortalConfig) -> None:
        self._config = config
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self._config.failure_window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until a locked key frees up; None when none is locked."""
        now = self._config.clock()
        waits = []
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self._config.max_failures:
                oldest = times[-self._config.max_failures]
                waits.append(self._config.failure_window - (now - oldest))
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, *keys: str) -> None:
        """Count one failure against each key."""
        now = self._config.clock()
        if len(self._failures) > _MAX_KEYS:  # many distinct names: drop the stale ones
            for stale in list(self._failures):
                self._recent(stale, now)
        for key in keys:
            self._recent(key, now)
            self._failures.setdefault(key, deque()).append(now)

    def clear(self, key: str) -> None:
        """Forget a key's failures (a successful login clears its username)."""
        self._failures.pop(key, None)
