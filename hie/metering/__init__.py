"""Usage metering: requests, resources read and written, and bytes per
organisation per day — the basis for charging hospitals by use.

* :mod:`hie.metering.counters` — :class:`UsageMeter` (in-memory counts, periodic
  flush) and :class:`MeteringMiddleware` (counts each request);
* :mod:`hie.metering.service` — adding counts to the store and reading them back;
* :mod:`hie.metering.router` — ``GET /admin/usage`` for administrators.
"""
