"""The sensitivity code lists are well-formed data: the five sensitive areas of
the design, HL7 v3 ActCode label codes, and triggers in the right shapes."""

from __future__ import annotations

import re

import pytest

from schemas.sensitivity import (
    ATC_PREFIXES,
    BY_CODE,
    CATEGORIES,
    ICD10_RANGES,
    LABEL_SYSTEM,
    LOINC_CODES,
    SENSITIVE_CODES,
    normalize_icd10,
)


def test_the_design_areas_each_have_a_v3_actcode_label():
    # mental health, HIV/STI, substance use, reproductive, genetic
    assert {"PSY", "HIV", "STD", "ETH", "SEX", "GDIS"} == SENSITIVE_CODES
    assert LABEL_SYSTEM == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert [c.code for c in CATEGORIES] == list(BY_CODE)


def test_every_category_is_named_for_people_in_both_languages():
    for category in CATEGORIES:
        assert category.display.endswith("information sensitivity")
        assert category.name_en and category.name_zh


def test_every_trigger_points_at_a_category():
    labels = ({lab for *_, lab in ICD10_RANGES}
              | {lab for labs in LOINC_CODES.values() for lab in labs}
              | {lab for labs in ATC_PREFIXES.values() for lab in labs})
    assert labels <= SENSITIVE_CODES
    assert labels == SENSITIVE_CODES  # and every category has at least one trigger


@pytest.mark.parametrize("first, last, label", ICD10_RANGES)
def test_icd10_ranges_are_ordered_category_or_subcategory_codes(first, last, label):
    pattern = re.compile(r"^[A-Z]\d{2}\d?$")
    assert pattern.match(first) and pattern.match(last)
    assert len(first) == len(last) and first <= last


def test_loinc_codes_have_the_loinc_shape_with_a_valid_check_digit():
    for code in LOINC_CODES:
        body, check = code.split("-")
        assert body.isdigit() and check.isdigit()
        assert int(check) == _mod10(body), code


def _mod10(body: str) -> int:
    """LOINC's check digit (mod 10, Luhn-like, as LOINC publishes it)."""
    digits = [int(d) for d in body]
    odd = "".join(str(d) for d in digits[::-1][::2])[::-1]  # from the right
    even = [d for d in digits[::-1][1::2]]
    total = sum(int(d) for d in str(int(odd) * 2)) + sum(even)
    return (10 - total % 10) % 10


def test_atc_prefixes_have_the_atc_shape():
    for prefix in ATC_PREFIXES:
        assert re.match(r"^[A-Z]\d{2}[A-Z]{1,2}$", prefix), prefix


def test_normalize_icd10():
    assert normalize_icd10(" f32.900 ") == "F32900"
