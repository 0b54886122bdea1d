"""Generator of clinically plausible FHIR R4 data for the benchmarks.

Deterministic for a seed: patients with Chinese (and some Latin) names,
GB 11643 resident ID numbers and per-hospital MRNs, encounters, LOINC vital
signs and labs, ICD-10 diagnoses, ATC-coded prescriptions, lab reports, and
now and then an allergy, a procedure or a vaccination, packed as
``transaction`` Bundles of about fifty resources.

>>> from benchmarks.datagen import generate_bundles
>>> bundle = next(generate_bundles(seed=1, count=1))
>>> bundle["type"], bundle["entry"][0]["request"]["method"]
('transaction', 'POST')
"""

from benchmarks.datagen.bundles import (
    TODAY,
    BigPatient,
    generate_big_patient,
    generate_bundles,
    iter_resources,
)
from benchmarks.datagen.chart import HOSPITALS, Hospital
from benchmarks.datagen.identity import (
    RESIDENT_ID_SYSTEM,
    is_valid_resident_id,
    resident_id_check_char,
)

__all__ = [
    "HOSPITALS",
    "RESIDENT_ID_SYSTEM",
    "TODAY",
    "BigPatient",
    "Hospital",
    "generate_big_patient",
    "generate_bundles",
    "is_valid_resident_id",
    "iter_resources",
    "resident_id_check_char",
]
