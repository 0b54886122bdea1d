"""Metering tests run against each store back end: ``sqlite`` (a file in
``tmp_path``), ``mongo`` (the in-memory double) and ``mongo-real`` when
``HIE_TEST_MONGODB_URL`` is set."""

from __future__ import annotations


