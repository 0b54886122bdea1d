"""The one exception the imaging package raises for input it refuses."""

from __future__ import annotations

#: PS3.4 / PS3.18 failure reasons used by :class:`DicomError`.
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000


class DicomError(ValueError):
    """Input refused. ``.reason``: short human text; ``.failure``: PS3.4/PS3.18 failure
    reason code (0xA700 out of resources: too large / over a limit; 0xA900 data set does
    not match SOP class: missing or invalid required UIDs; 0xC000 cannot understand: not
    DICOM, truncated, malformed).

    >>> DicomError("not DICOM").failure == 0xC000
    True
    """

    def __init__(self, reason: str, failure: int = CANNOT_UNDERSTAND) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure

    def __repr__(self) -> str:
        return f"DicomError({self.reason!r}, 0x{self.failure:04X})"
