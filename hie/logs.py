"""Logging of the served processes (``hie serve``, ``hie-consent serve``).

uvicorn configures only its own loggers; this configuration gives ours
(``hie.*``, ``consent.*``) timestamped lines on standard error as well, and
keeps chatty libraries (httpx logs every request it makes) at warnings. It is
applied by the commands that serve, never by the app factory, so an embedding
process (tests, benchmarks) keeps its own logging. Resident ID numbers are
masked by a filter on every handler (:func:`hie.app.mask_logs`).
"""

from __future__ import annotations

import copy
from typing import Any


def served_log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's log configuration plus a root handler for our own loggers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["hie"] = {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["hie"] = {"class": "logging.StreamHandler", "formatter": "hie",
                                 "stream": "ext://sys.stderr"}
    config["root"] = {"handlers": ["hie"], "level": level.upper()}
    config["loggers"]["httpx"] = {"level": "WARNING"}
    config["loggers"]["httpcore"] = {"level": "WARNING"}
    return config
