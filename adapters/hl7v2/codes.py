"""Local code → LOINC / ICD-10 / UCUM tables that the hospital edits.

The tables are plain CSV files (UTF-8, header row) so that a lab manager can keep
them in a spreadsheet: ``loinc.csv`` (``local_code,loinc,display``),
``icd10.csv`` (``local_code,icd10,display``) and ``units.csv``
(``local_unit,ucum``). The defaults ship in ``adapters/hl7v2/maps/``; a hospital
points ``HIE_ADAPTER_HL7V2_MAPS`` (or ``CodeMaps.load(path)``) at its own folder.
A file missing from that folder falls back to the shipped one.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
DEFAULT_DIR = Path(__file__).with_name("maps")
ENV_VAR = "HIE_ADAPTER_HL7V2_MAPS"


@dataclass(frozen=True)
class Mapped:
    """A standard code a local code maps to."""

    system: str
    code: str
    display: str


@dataclass
class CodeMaps:
    """The three tables, keyed by the local code as the HIS/LIS sends it (case-sensitive
    for units, upper-cased for codes since LIS exports vary in case)."""

    loinc: dict[str, Mapped] = field(default_factory=dict)
    icd10: dict[str, Mapped] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> CodeMaps:
        """Read the tables from ``folder``, else ``$HIE_ADAPTER_HL7V2_MAPS``, else defaults."""
        chosen = Path(folder or os.environ.get(ENV_VAR) or DEFAULT_DIR)
        if not chosen.is_dir():
            raise FileNotFoundError(f"HL7 v2 mapping folder not found: {chosen}")

        def rows(name: str) -> list[dict[str, str]]:
            path = chosen / name if (chosen / name).exists() else DEFAULT_DIR / name
            with path.open(encoding="utf-8-sig", newline="") as fh:
                return [r for r in csv.DictReader(fh) if any((v or "").strip() for v in r.values())]

        return cls(
            loinc={r["local_code"].strip().upper(): Mapped(LOINC, r["loinc"].strip(),
                                                           (r.get("display") or "").strip())
                   for r in rows("loinc.csv")},
            icd10={r["local_code"].strip().upper(): Mapped(ICD10, r["icd10"].strip(),
                                                           (r.get("display") or "").strip())
                   for r in rows("icd10.csv")},
            units={r["local_unit"].strip(): r["ucum"].strip() for r in rows("units.csv")},
        )

    def lab(self, local_code: str) -> Mapped | None:
        """The LOINC code for a local lab code (OBR-4 / OBX-3), if the table has it."""
        return self.loinc.get(local_code.strip().upper())

    def diagnosis(self, local_code: str) -> Mapped | None:
        """The ICD-10 code for a local diagnosis code (DG1-3), if the table has it."""
        return self.icd10.get(local_code.strip().upper())

    def ucum(self, unit: str) -> str | None:
        """The UCUM code of a unit string as the LIS writes it, if known."""
        return self.units.get(unit.strip())
