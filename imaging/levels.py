"""The query levels of the Study Root information model (PS3.4 C.6.2) and which
attributes belong to each.

The exchange keeps one record per study, series and instance; each is the
:func:`level_view` of an instance's DICOM JSON. As in the Study Root model, the
patient's attributes are study attributes (PS3.18 10.6.1.2.3). Every attribute that
is not listed at the study or series level belongs to the instance.

>>> view = level_view({"00100010": {"vr": "PN"}, "00080060": {"vr": "CS", "Value": ["CT"]},
...                    "00080018": {"vr": "UI", "Value": ["1.2.3"]}}, "series")
>>> sorted(view)
['00080060', '00100010']
"""

from __future__ import annotations

from typing import Literal

Level = Literal["study", "series", "instance"]
LEVELS: tuple[Level, ...] = ("study", "series", "instance")

#: Attributes the exchange computes for study and series records (PS3.4 C.3.4).
MODALITIES_IN_STUDY = "00080061"
SOP_CLASSES_IN_STUDY = "00080062"
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"

#: Attributes every level has with its own value (the study's RetrieveURL is not the
#: instance's): a study or series view of an instance leaves them out.
PER_LEVEL_TAGS = frozenset({
    "00080054",  # RetrieveAETitle
    "00080056",  # InstanceAvailability
    "00081190",  # RetrieveURL
})

#: Attributes that go with every level: those describing the data set itself, and
#: those every level has with its own value.
COMMON_TAGS = PER_LEVEL_TAGS | frozenset({
    "00080005",  # SpecificCharacterSet
    "00080201",  # TimezoneOffsetFromUTC
})

#: Patient module (C.7.1.1), Patient Study (C.7.2.2) and General Study (C.7.2.1).
STUDY_TAGS = COMMON_TAGS | frozenset({
    # patient
    "00100010", "00100020", "00100021", "00100022", "00100024", "00100030", "00100032",
    "00100040", "00100050", "00101000", "00101001", "00101002", "00101005", "00101040",
    "00101060", "00102160", "00102201", "00102202", "00102203", "00102292", "00102293",
    "00102294", "00102295", "00102297", "00102298", "00102299", "00104000", "00120062",
    "00120063", "00120064",
    # patient study
    "00081080", "00081084", "00101010", "00101020", "00101021", "00101022", "00101023",
    "00101024", "00101030", "00102000", "00102110", "00102180", "001021A0", "001021B0",
    "001021C0", "001021D0", "00380010", "00380014", "00380060", "00380062", "00380064",
    "00380500", "00400600",
    # general study
    "0020000D", "00080020", "00080030", "00080090", "00080096", "0008009C", "0008009D",
    "00200010", "00080050", "00080051", "00081030", "00081032", "00081048", "00081049",
    "00081060", "00081062", "00081110", "00321034", "00321060", "00321064", "00401012",
    # computed
    MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY, NUMBER_OF_STUDY_RELATED_SERIES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
})

#: General Series (C.7.3.1), General Equipment (C.7.5.1) and the performed procedure
#: step summary.
SERIES_TAGS = COMMON_TAGS | frozenset({
    "00080060", "0020000E", "00200011", "00200060", "00080021", "00080031", "00081050",
    "00081052", "00181030", "0008103E", "0008103F", "00081070", "00081072", "00081111",
    "00081250", "00180015", "00185100", "00280108", "00280109", "00400275", "00400244",
    "00400245", "00400250", "00400251", "00400253", "00400254", "00400260", "00400280",
    "00102210", "00080064",
    # equipment
    "00080070", "00080080", "00080081", "00081010", "00081040", "00081090", "00181000",
    "00181020",
    NUMBER_OF_SERIES_RELATED_INSTANCES,
})

#: SOP Common and the instance-level identifiers asked of QIDO-RS; every other
#: attribute not named above is an instance attribute too (see :func:`level_of`).
INSTANCE_TAGS = COMMON_TAGS | frozenset({
    "00080016", "00080018", "00200013", "00080008", "00080012", "00080013", "00080014",
    "00080023", "00080033", "00080022", "00080032", "0008002A", "00280008", "00280010",
    "00280011", "00280100", "00280002", "00280004", "00200020", "00200032", "00200037",
    "00200052", "00201041", "0040A043", "0040A491", "0040A493", "0040A496", "0040A504",
    "0040A730", "00420010", "00700080", "00700081",
})

_ABOVE: dict[Level, frozenset[str]] = {
    "study": STUDY_TAGS,
    "series": STUDY_TAGS | SERIES_TAGS,
}


def level_of(tag: str) -> Level | None:
    """The highest level an attribute belongs to (None: every level has it)."""
    if tag in COMMON_TAGS:
        return None
    if tag in STUDY_TAGS:
        return "study"
    if tag in SERIES_TAGS:
        return "series"
    return "instance"


def level_tags(level: Level) -> frozenset[str] | None:
    """The attributes of ``level`` and the levels above it (None: every attribute)."""
    return _ABOVE.get(level)


def level_view(ds_json: dict, level: Level) -> dict:
    """The attributes of ``level`` and the levels above it, from an instance's DICOM JSON
    (at the study and series level without the instance's RetrieveURL and availability)."""
    if level not in LEVELS:
        raise ValueError(f"not a query level: {level!r}")
    wanted = _ABOVE.get(level)
    if wanted is None:
        return dict(ds_json)
    return {tag: attr for tag, attr in ds_json.items()
            if tag in wanted and tag not in PER_LEVEL_TAGS}
