"""QIDO-RS: parsing query parameters, PS3.4 attribute matching and the attributes returned."""

from __future__ import annotations

import pytest

from imaging.qido import (
    FUZZY_WARNING,
    REQUIRED_RETURN,
    Match,
    QidoError,
    QidoQuery,
    matches,
    parse_query,
    project,
    warning,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.10"
OTHER_UID = "1.2.826.0.1.3680043.8.498.11"

STUDY = {
    "00080020": {"vr": "DA", "Value": ["20240315"]},
    "00080030": {"vr": "TM", "Value": ["143015.250"]},
    "00080050": {"vr": "SH", "Value": ["ACC-2024-0042"]},
    "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
    "00080090": {"vr": "PN", "Value": [{"Alphabetic": "House^Gregory"}]},
    "00080096": {"vr": "SQ", "Value": [
        {"00401101": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["D123"]}}]},
         "00080080": {"vr": "LO", "Value": ["Princeton-Plainsboro"]}}]},
    "00081030": {"vr": "LO", "Value": ["CT Chest with contrast"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]},
    "00100020": {"vr": "LO", "Value": ["MRN-001"]},
    "00100030": {"vr": "DA", "Value": ["19800101"]},
    "00100040": {"vr": "CS", "Value": ["M"]},
    "0020000D": {"vr": "UI", "Value": [STUDY_UID]},
    "00200010": {"vr": "SH", "Value": ["S1"]},
    "00201206": {"vr": "IS", "Value": [2]},
    "00201208": {"vr": "IS", "Value": [12]},
    "00081190": {"vr": "UR", "Value": ["https://exchange/dicomweb/studies/" + STUDY_UID]},
    "00101010": {"vr": "AS", "Value": ["044Y"]},
}

SERIES = {
    "0020000D": {"vr": "UI", "Value": [STUDY_UID]},
    "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
    "00080060": {"vr": "CS", "Value": ["CT"]},
    "00080021": {"vr": "DA", "Value": ["20240315"]},
    "0008002A": {"vr": "DT", "Value": ["20240315143015.25+0800"]},
    "00400275": {"vr": "SQ", "Value": [
        {"00400009": {"vr": "SH", "Value": ["SPS-7"]}, "00401001": {"vr": "SH", "Value": ["RP-1"]}},
        {"00400009": {"vr": "SH", "Value": ["SPS-8"]}, "00401001": {"vr": "SH", "Value": ["RP-2"]}},
    ]},
}


def study(**params: str) -> QidoQuery:
    return parse_query(list(params.items()), "study")


def hit(params: list[tuple[str, str]], record: dict = STUDY, level: str = "study") -> bool:
    return matches(record, parse_query(params, level))  # type: ignore[arg-type]


# -- parsing ------------------------------------------------------------------------------

def test_keys_by_keyword_or_tag_give_the_same_match() -> None:
    by_keyword = study(PatientID="MRN-001").matches
    assert by_keyword == study(**{"00100020": "MRN-001"}).matches
    assert by_keyword == (Match("00100020", "LO", "single", value="MRN-001"),)


def test_kinds_of_match_are_recognised() -> None:
    query = parse_query([("PatientName", "zh*"), ("StudyDate", "20240101-20241231"),
                         ("StudyInstanceUID", f"{STUDY_UID},{OTHER_UID}"),
                         ("AccessionNumber", ""), ("StudyTime", "1430")], "study")
    kinds = {m.tag: m for m in query.matches}
    assert kinds["00100010"].kind == "wildcard" and kinds["00100010"].value == "zh*"
    assert (kinds["00080020"].kind, kinds["00080020"].low, kinds["00080020"].high) == \
        ("range", "20240101", "20241231")
    assert kinds["0020000D"] == Match("0020000D", "UI", "uids", values=(STUDY_UID, OTHER_UID))
    assert kinds["00080050"].kind == "empty"
    assert kinds["00080030"] == Match("00080030", "TM", "single", value="1430")


def test_repeated_uid_keys_make_one_list() -> None:
    query = parse_query([("StudyInstanceUID", STUDY_UID), ("StudyInstanceUID", OTHER_UID)],
                        "study")
    assert query.matches == (Match("0020000D", "UI", "uids", values=(STUDY_UID, OTHER_UID)),)
    backslash = study(StudyInstanceUID=f"{STUDY_UID}\\{OTHER_UID}")
    assert backslash.matches == query.matches


def test_open_ended_ranges() -> None:
    low = study(StudyDate="20240101-").matches[0]
    high = study(StudyDate="-20240101").matches[0]
    assert (low.kind, low.low, low.high) == ("range", "20240101", None)
    assert (high.kind, high.low, high.high) == ("range", None, "20240101")


def test_datetime_range_with_offsets_is_split_at_the_right_hyphen() -> None:
    query = parse_query([("AcquisitionDateTime", "20240315-0500-20240316")], "instance")
    match = query.matches[0]
    assert (match.kind, match.low, match.high) == ("range", "20240315-0500", "20240316")
    single = parse_query([("AcquisitionDateTime", "20240315143015-0500")], "instance")
    assert single.matches[0].kind == "single"


def test_sequence_keys_by_tag_or_keyword_path() -> None:
    by_tag = parse_query([("00400275.00400009", "SPS-7")], "series")
    by_keyword = parse_query([("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-7")],
                             "series")
    assert by_tag.matches == by_keyword.matches == (Match(
        "00400275", "SQ", "sequence",
        items=(Match("00400009", "SH", "single", value="SPS-7"),)),)


def test_includefield_limit_offset_and_fuzzymatching() -> None:
    query = parse_query([("includefield", "StudyDescription,00101010"),
                         ("includefield", "PatientAge"), ("limit", "25"), ("offset", "50"),
                         ("fuzzymatching", "true")], "study")
    assert query.include == frozenset({"00081030", "00101010"})
    assert (query.limit, query.offset, query.fuzzy, query.include_all) == (25, 50, True, False)
    assert parse_query([("includefield", "all")], "study").include_all
    assert parse_query([("limit", "5000")], "study", max_limit=1000).limit == 1000
    defaults = parse_query([], "study")
    assert (defaults.limit, defaults.offset, defaults.fuzzy) == (None, 0, False)


def test_uids_from_the_url_are_added_as_keys() -> None:
    query = parse_query([("StudyInstanceUID", OTHER_UID)], "series", study_uid=STUDY_UID)
    assert Match("0020000D", "UI", "single", value=STUDY_UID) in query.matches
    # both hold: the URL narrows the query, it does not widen it
    assert not matches(SERIES, query)
    assert matches(SERIES, parse_query([], "series", study_uid=STUDY_UID))
    assert not matches(SERIES, parse_query([], "series", study_uid=OTHER_UID))


@pytest.mark.parametrize(("params", "message"), [
    ([("PatientNmae", "x")], "unknown attribute"),
    ([("0009100F", "x")], "unknown attribute"),
    ([("foo", "bar")], "unknown attribute"),
    ([("PatientID", "a\x00b")], "control"),
    ([("PatientID", "x" * 1025)], "longer"),
    ([("StudyInstanceUID", ",".join(f"1.2.{i}" for i in range(1001)))], "more than 1000"),
    ([("StudyInstanceUID", "../../etc/x")], "not a valid UID"),
    ([("StudyInstanceUID", "1.2.*")], "not a valid UID"),
    ([("StudyDate", "2024*")], "wildcards"),
    ([("StudyDate", "2024-01-01")], "not a DA"),
    ([("StudyDate", "20241231-20240101")], "ends before"),
    ([("StudyDate", "-")], "not a DA"),
    ([("StudyTime", "1a")], "not a TM"),
    ([("NumberOfStudyRelatedInstances", "1?")], "wildcards"),
    ([("NumberOfStudyRelatedInstances", "many")], "not a number"),
    ([("ModalitiesInStudy", "CT\\MR")], "multiple value"),
    ([("ReferringPhysicianIdentificationSequence", "x")], "through its items"),
    ([("PatientID.IssuerOfPatientID", "x")], "only a sequence"),
    ([("PatientID", "a"), ("PatientID", "b")], "more than once"),
    ([("limit", "-1")], "non-negative"),
    ([("limit", "ten")], "non-negative"),
    ([("offset", "1"), ("offset", "2")], "more than once"),
    ([("fuzzymatching", "maybe")], "true or false"),
    ([("includefield", "NoSuchThing")], "unknown attribute"),
    ([("SOPInstanceUID", "1.2.3")], "instance-level"),
    ([("Modality", "CT")], "series-level"),
])
def test_bad_queries_are_refused_with_a_reason(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(QidoError, match=message):
        parse_query(params, "study")


def test_a_long_uid_list_is_accepted_but_other_long_values_are_not() -> None:
    uids = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(1, 101)]
    query = parse_query([("StudyInstanceUID", ",".join(uids))], "study")
    assert query.matches[0].values == tuple(uids)
    with pytest.raises(QidoError, match="longer"):
        parse_query([("StudyDescription", "x" * 1025)], "study")


def test_a_bad_uid_in_the_url_is_refused() -> None:
    with pytest.raises(QidoError):
        parse_query([], "series", study_uid="../x")


# -- matching -----------------------------------------------------------------------------

def test_single_value_matching_is_case_sensitive_except_for_person_names() -> None:
    assert hit([("PatientID", "MRN-001")])
    assert not hit([("PatientID", "mrn-001")])
    assert not hit([("PatientID", "MRN-00")])
    assert hit([("PatientName", "zhang^san")])
    assert hit([("PatientName", "张^三")])           # the ideographic group matches too
    assert not hit([("PatientName", "Zhang")])


def test_uid_list_matching() -> None:
    assert hit([("StudyInstanceUID", f"{OTHER_UID},{STUDY_UID}")])
    assert not hit([("StudyInstanceUID", f"{OTHER_UID},1.2.3")])
    assert hit([("StudyInstanceUID", STUDY_UID)])


@pytest.mark.parametrize(("pattern", "expected"), [
    ("Zh*", True), ("*San", True), ("z?ang^san", True), ("Zh?ng*", True), ("Z?ng*", False),
    ("*", True), ("Li*", False), ("Zhang^Sa?", True), ("Zhang^S?", False),
])
def test_wildcard_matching_on_person_names(pattern: str, expected: bool) -> None:
    assert hit([("PatientName", pattern)]) is expected


def test_wildcard_matching_is_case_sensitive_for_other_text() -> None:
    assert hit([("StudyDescription", "CT Chest*")])
    assert not hit([("StudyDescription", "ct chest*")])
    assert hit([("AccessionNumber", "ACC-????-0042")])
    assert hit([("ModalitiesInStudy", "S?")])        # any value of a multi-valued attribute
    assert not hit([("AccessionNumber", "ACC.*")])   # regex characters are literal


@pytest.mark.parametrize(("value", "expected"), [
    ("20240315", True), ("20240316", False), ("20240101-20241231", True),
    ("20240315-20240315", True), ("20240316-", False), ("20240315-", True), ("-20240315", True),
    ("-20240314", False), ("20230101-20231231", False),
])
def test_date_matching(value: str, expected: bool) -> None:
    assert hit([("StudyDate", value)]) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("143015.25", True), ("143015.250000", True), ("143015", False), ("1430-1431", True),
    ("-1430", True), ("1431-", False), ("-142959", False), ("14-", True), ("143016-", False),
    ("14:30-14:31", True),
])
def test_time_matching(value: str, expected: bool) -> None:
    assert hit([("StudyTime", value)]) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("20240315-20240316", True), ("2024-", True), ("-2023", False), ("20240315143015.25", True),
    ("202403151430-202403151431", True), ("20240315143016-", False),
])
def test_datetime_matching_ignores_offsets(value: str, expected: bool) -> None:
    assert hit([("AcquisitionDateTime", value)], SERIES, "instance") is expected


def test_date_and_time_ranges_are_matched_independently() -> None:
    # a combined datetime range would exclude 2024-03-15 14:30, the independent one keeps it
    assert hit([("StudyDate", "20240314-20240315"), ("StudyTime", "1000-1500")])
    assert not hit([("StudyDate", "20240314-20240315"), ("StudyTime", "1500-2300")])


def test_sequence_matching_needs_all_keys_in_one_item() -> None:
    def series_hit(*params: tuple[str, str]) -> bool:
        return hit(list(params), SERIES, "series")

    assert series_hit(("00400275.00400009", "SPS-8"))
    assert series_hit(("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-7"),
                      ("RequestAttributesSequence.RequestedProcedureID", "RP-1"))
    assert not series_hit(("00400275.00400009", "SPS-7"), ("00400275.00401001", "RP-2"))
    assert series_hit(("00400275.00400009", "SPS-*"))
    assert not series_hit(("00400275.00400009", "SPS-9"))


def test_nested_sequence_matching() -> None:
    key = "ReferringPhysicianIdentificationSequence.PersonIdentificationCodeSequence.CodeValue"
    assert hit([(key, "D123")])
    assert not hit([(key, "D999")])


def test_empty_values_are_universal_even_for_absent_attributes() -> None:
    assert hit([("StudyDescription", ""), ("PatientComments", ""), ("IssuerOfPatientID", "*")])
    assert hit([("ReferringPhysicianIdentificationSequence.InstitutionName", "")])


def test_an_absent_attribute_does_not_match_a_value() -> None:
    assert not hit([("PatientComments", "x")])
    assert not hit([("PatientComments", "*x*")])
    assert not hit([("OtherPatientIDsSequence.PatientID", "x")])
    assert not hit([("StudyDate", "20240315")], {"00080020": {"vr": "DA"}})


def test_numbers_match_as_numbers() -> None:
    assert hit([("NumberOfStudyRelatedInstances", "12")])
    assert hit([("NumberOfStudyRelatedInstances", "012")])
    assert not hit([("NumberOfStudyRelatedInstances", "13")])


def test_all_keys_must_hold() -> None:
    assert hit([("PatientID", "MRN-001"), ("StudyDate", "20240101-")])
    assert not hit([("PatientID", "MRN-001"), ("PatientSex", "F")])


# -- results ------------------------------------------------------------------------------

def test_a_study_result_has_the_required_attributes_present_in_the_record() -> None:
    shown = project(STUDY, study(PatientID="MRN-001"))
    assert set(shown) == set(REQUIRED_RETURN["study"]) & set(STUDY)
    assert "00081030" not in shown and "00080096" not in shown
    assert list(shown) == sorted(shown)


def test_matched_and_included_attributes_are_returned() -> None:
    shown = project(STUDY, study(StudyDescription="CT*", includefield="PatientAge"))
    assert shown["00081030"] == STUDY["00081030"]
    assert shown["00101010"] == STUDY["00101010"]


def test_includefield_all_returns_every_attribute_of_the_level() -> None:
    shown = project(STUDY, study(includefield="all"))
    assert shown == {tag: STUDY[tag] for tag in sorted(STUDY)}
    # a series result does not carry instance attributes even with all
    series = project(SERIES, parse_query([("includefield", "all")], "series"))
    assert "0008002A" not in series and "00400275" in series


def test_study_attributes_come_with_series_results_unless_study_relative() -> None:
    record = {**STUDY, **SERIES}
    alone = project(record, parse_query([], "series"))
    relative = project(record, parse_query([], "series", study_uid=STUDY_UID))
    assert "00100020" in alone and "00100020" not in relative
    assert "00080060" in alone and "00080060" in relative


def test_instance_results_have_instance_attributes() -> None:
    record = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
              "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
              "00280010": {"vr": "US", "Value": [512]},
              "00180050": {"vr": "DS", "Value": [1.25]}}
    query = parse_query([], "instance", study_uid=STUDY_UID, series_uid="1.2.3.4")
    assert set(project(record, query)) == {"00080016", "00080018", "00280010"}


def test_fuzzymatching_is_reported_not_done() -> None:
    assert warning(study(fuzzymatching="true")) == FUZZY_WARNING
    assert warning(study(fuzzymatching="false")) is None
    # a fuzzy query still matches literally
    assert not matches(STUDY, study(PatientName="Zang^San", fuzzymatching="true"))
