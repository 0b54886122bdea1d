"""DICOM JSON read without pydicom (the plain cases of ``imaging.jsonread``) gives what
reading it through pydicom's ``Dataset.from_json`` gives: the same refusals with the same
failure codes and reasons, the same ``coerced``, bulk paths, URIs and VRs, the same UIDs,
the same ``to_dicom_json`` (ordering included) and the same data set when one is asked
for -- over every readable test file, synthetic instances, and malformed variants."""

from __future__ import annotations

import base64
import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from imaging_files import SERIES, SOP, STUDY, readable
from pydicom import config

from imaging.errors import DicomError
from imaging.jsonmodel import to_dicom_json
from imaging.jsonparse import (
    _instance_from_plain_json,
    _instance_through_pydicom,
    _JsonState,
    instance_from_json,
)
from imaging.jsonread import Unsure, attribute_json, kept_as_is
from imaging.parse import DEFAULT_LIMITS, Limits, read_instance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

URL = "https://pacs.hospital-a.example/dicomweb/studies/1/series/2/instances/3"
READABLE = readable()
SMALL = Limits(max_element_bytes=300, max_depth=2, max_elements=120)


def outcome(read: Callable[[], Any]) -> tuple:
    """Everything a caller can see of reading DICOM JSON, or the refusal."""
    try:
        instance = read()
    except DicomError as refused:
        return ("refused", refused.failure, refused.reason)
    except Exception as error:  # noqa: BLE001 - whatever pydicom lets through, alike
        return ("error", type(error).__name__, str(error))
    uids = (instance.sop_class_uid, instance.sop_uid, instance.study_uid, instance.series_uid)
    return ("read", uids, instance.bulk_tags, instance.bulk_vrs, instance.bulk_uris,
            instance.coerced, instance.transfer_syntax,
            _attempt(lambda: to_dicom_json(instance)),          # the JSON made at reading
            _attempt(lambda: to_dicom_json(instance, instance_url=URL)),
            _attempt(lambda: instance.dataset.to_json_dict()),  # the data set, made now
            _attempt(lambda: to_dicom_json(instance)))


def _attempt(make: Callable[[], Any]) -> Any:
    try:
        return _ordered(make())
    except Exception as error:  # noqa: BLE001 - pydicom's writer may fail: alike too
        return ("error", type(error).__name__, str(error))


def _ordered(found: Any) -> Any:
    """JSON with dict ordering made visible (== on dicts ignores it)."""
    if isinstance(found, dict):
        return [(key, _ordered(value)) for key, value in found.items()]
    if isinstance(found, list | tuple):
        return [_ordered(value) for value in found]
    if isinstance(found, float) and found != found:
        return "NaN"                     # NaN != NaN
    return found


def same(doc: Any, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Assert both readings agree; True if the plain reading vouched for ``doc``."""
    through_pydicom = outcome(lambda: _instance_through_pydicom(doc, limits))
    now = outcome(lambda: instance_from_json(doc, limits=limits))
    assert now == through_pydicom
    try:
        _instance_from_plain_json(doc, limits)
    except Unsure:
        return False
    except DicomError:
        pass
    return True


def as_received(path: Path, url: str | None = URL) -> dict:
    """The DICOM JSON of a file as the exchange receives it: JSON text, parsed."""
    return orjson.loads(orjson.dumps(to_dicom_json(read_instance(path), instance_url=url)))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from benchmarks.datagen.dicom import generate_instances

    folder = tmp_path_factory.mktemp("synthetic")
    generate_instances(folder, seed=7, instances=40)
    return [as_received(p) for p in sorted(folder.rglob("*")) if p.is_file()]


@pytest.mark.parametrize("path", READABLE, ids=lambda p: p.name)
def test_every_readable_test_file_reads_alike(path: Path) -> None:
    for url in (URL, None):
        assert same(as_received(path, url))
    assert same(to_dicom_json(read_instance(path), instance_url=URL))   # pydicom's UIDs


def test_synthetic_instances_read_alike_and_plainly(synthetic: list[dict]) -> None:
    assert all(same(doc) for doc in synthetic)
    assert all(same(doc, SMALL) for doc in synthetic)


def test_typical_instances_are_read_without_pydicom(synthetic: list[dict]) -> None:
    instance = instance_from_json(synthetic[0])
    assert not instance.dataset_made
    assert instance.study_uid and not instance.dataset_made
    to_dicom_json(instance)
    assert not instance.dataset_made
    assert instance.dataset.StudyInstanceUID == instance.study_uid
    assert instance.dataset_made


def test_a_data_set_changed_before_writing_is_what_the_json_says(synthetic: list[dict]) -> None:
    instance = instance_from_json(synthetic[0])
    instance.dataset.PatientID = "changed"
    assert to_dicom_json(instance)["00100020"]["Value"] == ["changed"]


def _base() -> dict:
    return {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [SOP]},
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [SERIES]},
    }


_B64 = base64.b64encode
#: Attributes (tag → JSON) that pydicom reads in some special way, or refuses.
ODD_ATTRIBUTES: list[dict] = [
    {"00100010": {"vr": "PN", "Value": [{"Ideographic": "X"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A", "Phonetic": ""}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A", "Ideographic": "", "Phonetic": "P"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": ""}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "", "Ideographic": ""}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": ""}, {"Alphabetic": "B"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A"}, {"Alphabetic": "B"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A=B"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A\\B"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": 1}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A", "Other": "x"}]}},
    {"00100010": {"vr": "PN", "Value": ["Doe^Jane"]}},
    {"00100010": {"vr": "PN", "Value": [None]}},
    {"00100010": {"vr": "PN"}},
    {"00100020": {"vr": "LO", "Value": [""]}},
    {"00100020": {"vr": "LO", "Value": ["", ""]}},
    {"00100020": {"vr": "LO", "Value": ["a\\b"]}},
    {"00100020": {"vr": "LO", "Value": ["a\\b", "c"]}},
    {"00100020": {"vr": "LO", "Value": [" padded  "]}},
    {"00100020": {"vr": "LO", "Value": [None, "x"]}},
    {"00100020": {"vr": "LO", "Value": [5]}},
    {"00100020": {"vr": "LO", "Value": None}},
    {"00100020": {"vr": "LO", "Value": []}},
    {"00100020": {"vr": "LO", "Value": ["x"], "foo": 1}},
    {"00204000": {"vr": "LT", "Value": ["C:\\dir"]}},
    {"00204000": {"vr": "LT", "Value": ["x" * 400]}},
    {"00080020": {"vr": "DA", "Value": ["not a date"]}},
    {"00080060": {"vr": "CS", "Value": ["lower case"]}},
    {"0020000D": {"vr": "UI", "Value": [" " + STUDY + " "]}},
    {"0020000D": {"vr": "UI", "Value": [STUDY, STUDY]}},
    {"0020000D": {"vr": "UI", "Value": [""]}},
    {"0020000D": {"vr": "UI", "Value": []}},
    {"0020000D": {"vr": "UI"}},
    {"0020000D": {"vr": "LO", "Value": [STUDY]}},
    {"0020000D": {"vr": "UI", "Value": ["../../etc/x"]}},
    {"0020000D": {"vr": "UI", "Value": ["1.02.3"]}},
    {"0020000D": {"vr": "UI", "Value": ["1." + "2" * 70]}},
    {"0020000D": {"vr": "UI", "Value": [f"{STUDY}\\1.2"]}},
    {"0020000D": {"vr": "UI", "BulkDataURI": "https://x/y"}},
    {"00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}},
    {"00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.1", "1.2"]}},
    {"00020010": {"vr": "UI"}},
    {"00020010": {"vr": "LO", "Value": ["x"]}},
    {"00200013": {"vr": "IS", "Value": [1]}},
    {"00200013": {"vr": "IS", "Value": [1, -2, 10**12]}},
    {"00200013": {"vr": "IS", "Value": ["1"]}},
    {"00200013": {"vr": "IS", "Value": ["1.0"]}},
    {"00200013": {"vr": "IS", "Value": ["1A"]}},
    {"00200013": {"vr": "IS", "Value": [1.5]}},
    {"00200013": {"vr": "IS", "Value": [True]}},
    {"00200013": {"vr": "IS", "Value": [None]}},
    {"00200013": {"vr": "IS", "Value": [2**40]}},
    {"00280030": {"vr": "DS", "Value": [0.5, 1]}},
    {"00280030": {"vr": "DS", "Value": ["0.5"]}},
    {"00280030": {"vr": "DS", "Value": [float("nan")]}},
    {"00280030": {"vr": "DS", "Value": [float("inf")]}},
    {"00280030": {"vr": "DS", "Value": [10**400]}},
    {"00280030": {"vr": "DS", "Value": [0.1234567890123456789]}},
    {"00280010": {"vr": "US", "Value": [512]}},
    {"00280010": {"vr": "US", "Value": [-1, 70000]}},
    {"00280010": {"vr": "US", "Value": [512.0]}},
    {"00283002": {"vr": "US", "Value": [256, 0, 16]}},
    {"00283002": {"vr": "SS", "Value": [-256, 0, 16]}},
    {"00189087": {"vr": "FD", "Value": [1, 2.5]}},
    {"00189087": {"vr": "FL", "Value": [float("-inf")]}},
    {"00209165": {"vr": "AT", "Value": ["00100010", "0020000D"]}},
    {"00209165": {"vr": "AT", "Value": ["0010001a"]}},
    {"00209165": {"vr": "AT", "Value": ["0x10"]}},
    {"00209165": {"vr": "AT", "Value": [""]}},
    {"00209165": {"vr": "AT", "Value": [16]}},
    {"00091010": {"vr": "OB", "InlineBinary": _B64(b"ok").decode()}},
    {"00091010": {"vr": "OB", "InlineBinary": "QR=="}},
    {"00091010": {"vr": "OB", "InlineBinary": "QUI="}},
    {"00091010": {"vr": "OB", "InlineBinary": "QUJ="}},
    {"00091010": {"vr": "OB", "InlineBinary": ""}},
    {"00091010": {"vr": "OB", "InlineBinary": "not base64!"}},
    {"00091010": {"vr": "OB", "InlineBinary": "QQ"}},
    {"00091010": {"vr": "OB", "InlineBinary": ["QQ=="]}},
    {"00091010": {"vr": "OB", "InlineBinary": 5}},
    {"00091010": {"vr": "OB", "InlineBinary": _B64(bytes(50_000)).decode()}},
    {"00091010": {"vr": "OB", "InlineBinary": _B64(bytes(100_000)).decode()}},
    {"00091010": {"vr": "OB", "InlineBinary": "QQ==", "Value": [1]}},
    {"00091010": {"vr": "OB", "Value": [1]}},
    {"00091010": {"vr": "OB"}},
    {"00091010": {"vr": "OW", "InlineBinary": _B64(b"\x01\x02\x03").decode()}},
    {"00091010": {"vr": "OF", "InlineBinary": _B64(b"\x01\x02\x03\x04").decode()}},
    {"00091010": {"vr": "UN", "InlineBinary": _B64(b"\xfe\xff\x00\xe0abcd").decode()}},
    {"00090010": {"vr": "UN", "InlineBinary": _B64(b"CREATOR ").decode()}},
    {"00100010": {"vr": "UN", "InlineBinary": _B64(b"Doe^Jane").decode()}},
    {"00100010": {"vr": "PN", "InlineBinary": _B64(b"Doe^Jane").decode()}},
    {"00100010": {"vr": "UN"}},
    {"00100010": {"vr": "XX", "Value": ["x"]}},
    {"00100010": {"vr": "pn", "Value": [{"Alphabetic": "x"}]}},
    {"7FE00010": {"vr": "OW", "InlineBinary": "AAAA"}},
    {"7FE00010": {"vr": "OW", "BulkDataURI": "https://x/bulk"}},
    {"7FE00010": {"vr": "OW", "BulkDataURI": 5}},
    {"7FE00010": {"vr": "OW", "BulkDataURI": "x" * 3000}},
    {"00081032": {"vr": "SQ"}},
    {"00081032": {"vr": "SQ", "Value": []}},
    {"00081032": {"vr": "SQ", "Value": [{}]}},
    {"00081032": {"vr": "SQ", "Value": [None]}},
    {"00081032": {"vr": "SQ", "Value": ["x"]}},
    {"00081032": {"vr": "SQ", "Value": {"not": "a list"}}},
    {"00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["C"]}}],
                  "foo": 1}},
    {"00081032": {"vr": "SQ", "InlineBinary": "QQ=="}},
    {"00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["C"]},
                                        "7FE00010": {"vr": "OB", "BulkDataURI": "u"}},
                                       {"00080100": {"vr": "SH", "Value": ["D"]}}]}},
    {"00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH"}}]}},
    {"00081032": {"vr": "SQ", "Value": [{"0008010x": {"vr": "SH"}}]}},
    {"00081032": {"vr": "LO", "Value": [{"00080100": {"vr": "SH"}}]}},
    {"0010001a": {"vr": "LO", "Value": ["lower"]}},
    {"0010001a": {"vr": "LO", "Value": ["lower"]}, "0010001A": {"vr": "LO", "Value": ["up"]}},
    {"0010": {"vr": "PN"}},
    {"00100010": "Doe"},
    {"00100010": {"Value": ["x"]}},
    {"00100010": {"vr": 5}},
    {"FFFEE000": {"vr": "LO", "Value": ["item tag"]}},
    {"00100000": {"vr": "UL", "Value": [4]}},
    {"00091000": {"vr": "LO", "Value": ["private"]}},
    {"00090010": {"vr": "LO", "Value": ["CREATOR"]}, "00091000": {"vr": "LO", "Value": ["p"]}},
    {"00280103": {"vr": "US", "Value": [1]},
     "00081032": {"vr": "SQ", "Value": [{"00280103": {"vr": "US", "Value": [0]}}]}},
    # kept as they are only in this key order: "Value" first makes a fresh attribute
    {"00100020": {"Value": ["x"], "vr": "LO"}},
    {"00100020": {"Value": ["x", "y"], "vr": "LO"}},
    {"0020000D": {"Value": [STUDY], "vr": "UI"}},
    {"00200013": {"Value": [1], "vr": "IS"}},
    {"00280030": {"Value": [0.5, 0.5], "vr": "DS"}},
    {"00100010": {"Value": [{"Alphabetic": "A^B"}], "vr": "PN"}},
    {"00100010": {"vr": "PN", "Value": [{"Ideographic": "X", "Alphabetic": "A"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A", "Ideographic": "X"},
                                        {"Ideographic": "Y", "Alphabetic": "B"}]}},
    {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B", "Ideographic": "X",
                                         "Phonetic": "p"}]}},
    {"00100010": {"vr": "LO"}},
    {"00100010": {"vr": "SQ", "Value": ["x"]}},
    {"00081032": {"vr": "SQ", "Value": [{"00080104": {"vr": "LO", "Value": ["m"]},
                                        "00080100": {"vr": "SH", "Value": ["C"]}}]}},
    # at the edges of the length check the fast path makes (limit 300 with SMALL)
    {"00204000": {"vr": "LT", "Value": ["x" * 29]}},
    {"00204000": {"vr": "LT", "Value": ["x" * 30]}},
    {"00204000": {"vr": "LT", "Value": ["\U000e0001" * 29]}},
    {"00204000": {"vr": "LT", "Value": ["\U000e0001" * 30]}},
    {"00204000": {"vr": "LT", "Value": ["\x00\n" * 40]}},
    {"00081030": {"vr": "LO", "Value": ["x" * 14, "y" * 14]}},
    {"00081030": {"vr": "LO", "Value": ["x" * 14, "y" * 15]}},
    {"00081030": {"vr": "LO", "Value": ["é" * 20] * 4}},
    {"00200013": {"vr": "IS", "Value": [10**15 - 1]}},
    {"00200013": {"vr": "IS", "Value": [10**15, -10**15]}},
    {"00200013": {"vr": "IS", "Value": list(range(11))}},
    {"00200013": {"vr": "IS", "Value": list(range(12))}},
    {"00280030": {"vr": "DS", "Value": [1e308, -1e-308, 0.0, -0.0]}},
    {"00280030": {"vr": "DS", "Value": [0.1] * 11}},
    {"00280030": {"vr": "DS", "Value": [0.1] * 12}},
    {"00080060": {"vr": "CS", "Value": ["A", "B\\C"]}},
    {"0020000E": {"vr": "UI", "Value": [SERIES, ""]}},
    {"0020000E": {"vr": "UI", "Value": [SERIES, " 1.2"]}},
]


@pytest.mark.parametrize("extra", ODD_ATTRIBUTES, ids=lambda e: str(e)[:60])
def test_odd_attributes_read_alike(extra: dict) -> None:
    doc = {**_base(), **copy.deepcopy(extra)}
    same(doc)
    same(doc, SMALL)
    same(dict(reversed(doc.items())))


def test_nesting_and_counting_limits_refuse_alike() -> None:
    item: dict = {"0040A160": {"vr": "UT", "Value": ["leaf"]}}
    for _ in range(12):
        item = {"0040A730": {"vr": "SQ", "Value": [item]}}
        same({**_base(), **item})
        same({**_base(), **item}, SMALL)
    many = {"00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["C"]}}
                                                for _ in range(600)]}}
    for limit in (1000, 1203, 1204, 1205, 5000):
        same({**_base(), **many}, Limits(max_elements=limit))
    with pytest.raises(DicomError):
        instance_from_json([])  # type: ignore[arg-type]


_VALUES: list[Any] = [
    None, [], [None], [""], ["", "x"], ["x"], ["a\\b"], [" 1.2 "], ["1.2.3"], [1], [1.5],
    [True], [-3], [10**30], ["1"], [float("nan")], [{"Alphabetic": "A^B"}], [{}], [[]],
    "text", {"a": 1}, ["00100010"], ["x" * 700],
]
_VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OW",
        "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US",
        "UT", "UV", "XX"]


def _mutate(doc: dict, rng: random.Random) -> None:
    """One random change somewhere in ``doc`` (items included)."""
    target = doc
    while True:
        seqs = [a for a in target.values() if isinstance(a, dict) and a.get("vr") == "SQ"
                and isinstance(a.get("Value"), list) and a["Value"]
                and isinstance(a["Value"][0], dict)]
        if not seqs or rng.random() < 0.5:
            break
        target = rng.choice(rng.choice(seqs)["Value"])
    if not target:
        return
    key = rng.choice(list(target))
    attr = target[key]
    if not isinstance(attr, dict):
        return
    change = rng.randrange(7)
    if change == 0:
        attr["vr"] = rng.choice(_VRS)
    elif change == 1:
        attr["Value"] = copy.deepcopy(rng.choice(_VALUES))
        attr.pop("InlineBinary", None)
        attr.pop("BulkDataURI", None)
    elif change == 2:
        attr.pop("Value", None)
    elif change == 3:
        target[key.lower()] = target.pop(key)
    elif change == 4:
        attr["InlineBinary"] = rng.choice(["QQ==", "QR==", "??", "", _B64(bytes(70)).decode()])
    elif change == 5:
        attr["BulkDataURI"] = rng.choice(["https://x/b", 7])
    else:
        del target[key]


def test_randomly_damaged_instances_read_alike(synthetic: list[dict]) -> None:
    rng = random.Random(20261207)
    sources = synthetic[:6] + [as_received(p) for p in READABLE[:40]]
    plain = 0
    for _ in range(400):
        doc = copy.deepcopy(rng.choice(sources))
        for _ in range(rng.randrange(1, 4)):
            _mutate(doc, rng)
        plain += same(doc)
        plain += same(doc, SMALL)
    assert plain > 200        # most changes leave a plain case: the comparison has teeth


_POOL: list[Any] = [
    "", " ", "x", "A^B", "a\\b", " 1.2 ", "1.2.3", "é" * 7, "\U000e0001" * 3, "x" * 29,
    "x" * 31, "x" * 70, 0, 1, -1, 10**15 - 1, 10**15, -(10**15), 2**70, 0.5, -0.0, 1e308,
    float("nan"), float("inf"), True, None, {"Alphabetic": "A"}, [], "00100010",
]


def test_the_fast_check_vouches_only_for_what_the_full_checks_keep_as_is() -> None:
    """kept_as_is, the walk's shortcut, says yes only where the checks it skips pass
    (the length limit) and pydicom's JSON is the attribute itself."""
    rng = random.Random(7)
    vouched = 0
    for _ in range(20_000):
        vr = rng.choice(_VRS)
        values = [rng.choice(_POOL) for _ in range(rng.choice([1, 1, 1, 2, 3, 11, 12]))]
        limit = rng.choice([27, 28, 29, 60, 300, 65536])
        if not kept_as_is(vr, values, limit):
            continue
        vouched += 1
        attr = {"vr": vr, "Value": values}
        _JsonState(Limits(max_element_bytes=limit), plain=True).check_value("00100010", values)
        assert attribute_json(attr) is attr
        assert same({**_base(), "00100010": attr}, Limits(max_element_bytes=limit))
    assert vouched > 1000


def test_reading_and_writing_back_leaves_the_document_as_it_was(synthetic: list[dict]) -> None:
    """The JSON written back shares attributes with the document read: neither is
    changed by the other being read or written."""
    for doc in [*synthetic[:10], *(as_received(p) for p in READABLE[:60])]:
        before = copy.deepcopy(doc)
        instance = instance_from_json(doc)
        written = to_dicom_json(instance, instance_url=URL)
        written[next(iter(written))] = {"vr": "LO", "Value": ["changed"]}  # as STOW-RS does
        assert _ordered(doc) == _ordered(before)
        assert _ordered(instance.dataset.to_json_dict()) == _ordered(
            _instance_through_pydicom(before, DEFAULT_LIMITS).dataset.to_json_dict())


def test_a_changed_pydicom_configuration_goes_through_pydicom() -> None:
    doc = {**_base(), "00200013": {"vr": "IS", "Value": [1]}}
    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        assert instance_from_json(doc).dataset_made
        same({**doc, "00080060": {"vr": "CS", "Value": ["lower case"]}})
    finally:
        config.settings.reading_validation_mode = old
