"""Value parsing shared by extraction and search: dates, numbers, references."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hie.fhir.search.values import (
    date_bounds,
    date_range,
    number_range,
    split_reference,
    widen_approximately,
)
from hie.store.index import DATE_MAX, DATE_MIN


@pytest.mark.parametrize("text, low, high", [
    ("2024", "2024-01-01T00:00:00.000000", "2024-12-31T23:59:59.999999"),
    ("2024-02", "2024-02-01T00:00:00.000000", "2024-02-29T23:59:59.999999"),
    ("2023-02", "2023-02-01T00:00:00.000000", "2023-02-28T23:59:59.999999"),
    ("2024-03-01", "2024-03-01T00:00:00.000000", "2024-03-01T23:59:59.999999"),
    ("2024-03-01T10:15", "2024-03-01T10:15:00.000000", "2024-03-01T10:15:59.999999"),
    ("2024-03-01T10:15:30", "2024-03-01T10:15:30.000000", "2024-03-01T10:15:30.999999"),
    ("2024-03-01T10:15:30.5Z", "2024-03-01T10:15:30.500000", "2024-03-01T10:15:30.599999"),
    ("2024-03-01T10:15:30.123456789Z", "2024-03-01T10:15:30.123456",
     "2024-03-01T10:15:30.123456"),
    ("2024-03-01T00:30:00+08:00", "2024-02-29T16:30:00.000000", "2024-02-29T16:30:00.999999"),
    ("2024-03-01T20:00:00-05:00", "2024-03-02T01:00:00.000000", "2024-03-02T01:00:00.999999"),
    # a "+" in a URL query arrives as a space
    ("2024-03-01T08:00:00 08:00", "2024-03-01T00:00:00.000000", "2024-03-01T00:00:00.999999"),
])
def test_date_range_follows_precision_and_converts_to_utc(text: str, low: str, high: str):
    assert date_range(text) == (low, high)


@pytest.mark.parametrize("text", ["", "24", "2024-13", "2024-02-30", "2024-03-01T25:00",
                                  "2024-03-01T10", "2024/03/01", "yesterday",
                                  "2024-03-01T10:00:00+15:00", "2024-03-01T10:00:00+0800"])
def test_bad_dates_are_refused(text: str):
    with pytest.raises(ValueError):
        date_range(text)


def test_dates_at_the_edge_of_the_range_do_not_overflow():
    with pytest.raises(ValueError):
        date_range("0001-01-01T00:00:00+08:00")
    assert date_range("9999")[1] == DATE_MAX
    assert date_range("0001")[0] == DATE_MIN


@pytest.mark.parametrize("text, value, low, high", [
    ("5.4", 5.4, 5.35, 5.45),
    ("100", 100, 99.5, 100.5),
    ("1e2", 100, 50, 150),
    ("0.001", 0.001, 0.0005, 0.0015),
    ("-3.0", -3.0, -3.05, -2.95),
])
def test_number_range_is_implied_by_significant_figures(text: str, value: float, low: float,
                                                        high: float):
    v, lo, hi = number_range(text)
    assert v == pytest.approx(value) and lo == pytest.approx(low) and hi == pytest.approx(high)


@pytest.mark.parametrize("text", ["", "abc", "NaN", "Infinity", "5,4", "5.4mg"])
def test_bad_numbers_are_refused(text: str):
    with pytest.raises(ValueError):
        number_range(text)


def test_approximate_dates_widen_by_a_tenth_of_the_distance_to_now():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    low, high = date_bounds("2014-01-01")  # ten years before now: about a year either side
    wide_low, wide_high = widen_approximately(low, high, now)
    assert "2012-12-01" < wide_low < "2013-01-05"
    assert "2014-12-25" < wide_high < "2015-01-05"


def test_approximate_dates_widen_by_at_least_a_day():
    now = datetime(2024, 1, 1, 12, tzinfo=UTC)
    low, high = date_bounds("2024-01-01T12:00:00Z")
    assert widen_approximately(low, high, now) == ("2023-12-31T12:00:00.000000",
                                                   "2024-01-02T12:00:00.999999")


@pytest.mark.parametrize("ref, expected", [
    ("Patient/123", ("Patient", "123")),
    ("Location/ward-3", ("Location", "ward-3")),
    ("Observation/o1/_history/2", ("Observation", "o1")),
    ("https://hie.example.cn/fhir/Patient/123", ("Patient", "123")),
    ("https://hie.example.cn/fhir/Patient/123/_history/4", ("Patient", "123")),
    ("https://other.example.org/fhir/Location/1", ("", "https://other.example.org/fhir/Location/1")),
    ("urn:uuid:0b0b7d6e-0b4d-4d4b-9a55-2ee4e3a3c0f1",
     ("", "urn:uuid:0b0b7d6e-0b4d-4d4b-9a55-2ee4e3a3c0f1")),
    ("#contained-1", ("", "#contained-1")),
    ("a/b/Patient/1", ("", "a/b/Patient/1")),
    ("patient/1", ("", "patient/1")),
])
def test_split_reference(ref: str, expected: tuple[str, str]):
    assert split_reference(ref) == expected
