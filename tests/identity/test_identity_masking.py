"""Masking resident ID numbers in responses and logs."""

from __future__ import annotations

import logging

import orjson
import pytest
from identity.helpers import RID, make_rid, patient

from hie.identity.masking import (
    ResidentIdLogFilter,
    body_for_caller,
    mask_body,
    mask_patient,
)


def test_mask_patient_hides_birth_date_digits_of_resident_identifiers() -> None:
    number = make_rid()
    p = patient(rid=number, mrn="123456789012345678")
    p["text"] = {"status": "generated", "div": f"<div>身份证 {number}</div>"}
    masked = mask_patient(p, system=RID)
    values = {i["system"]: i["value"] for i in masked["identifier"]}
    assert values[RID] == number[:6] + "********" + number[14:]
    # another system's value is left alone, even if it is 18 digits long
    assert "123456789012345678" in values.values()
    assert number not in masked["text"]["div"]
    assert p["identifier"][1]["value"] == number  # the original is not modified


def test_mask_body_masks_patients_inside_bundles_and_leaves_others_untouched() -> None:
    number = make_rid()
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": patient(rid=number)},
                        {"resource": {"resourceType": "Observation", "id": "o",
                                      "note": [{"text": f"ID {number}"}]}}]}
    out = mask_body(orjson.dumps(bundle), system=RID)
    assert number.encode() not in out
    assert orjson.loads(out)["entry"][0]["resource"]["identifier"][1]["value"].startswith(
        number[:6] + "********")
    plain = orjson.dumps({"resourceType": "Observation", "id": "x", "valueInteger": 5})
    assert mask_body(plain, system=RID) is plain


@pytest.mark.parametrize("args", [True, False])
def test_log_filter_masks_numbers_in_messages(caplog: pytest.LogCaptureFixture,
                                              args: bool) -> None:
    number = make_rid()
    logger = logging.getLogger("test.identity.masking")
    log_filter = ResidentIdLogFilter()
    logger.addFilter(log_filter)
    try:
        with caplog.at_level(logging.INFO, logger="test.identity.masking"):
            if args:
                logger.info("linked %s and %s", number, "110105491231002")
            else:
                logger.info(f"linked {number}")
    finally:
        logger.removeFilter(log_filter)
    text = caplog.records[0].getMessage()
    assert number not in text and number[:6] + "********" in text
    if args:
        assert "110105******002" in text


def test_log_filter_leaves_other_messages_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "count=%d", (5,), None)
    assert ResidentIdLogFilter().filter(record)
    assert record.args == (5,) and record.getMessage() == "count=5"


def test_body_for_caller_masks_only_for_other_organisations() -> None:
    from hie.store.base import StoredResource

    number = make_rid()
    body = orjson.dumps(patient(rid=number))
    rec = StoredResource("Patient", "p", 1, "2024-01-01T00:00:00.000000", False, body,
                         source="org-a")
    assert body_for_caller(rec, caller_source="org-a", system=RID) is body
    assert body_for_caller(rec, caller_source="org-b", system=RID, is_patient=True) is body
    assert number.encode() not in body_for_caller(rec, caller_source="org-b", system=RID)
