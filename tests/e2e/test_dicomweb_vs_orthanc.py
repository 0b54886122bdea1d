"""The exchange's DICOMweb API answers like a real PACS: the same files are fed to
Orthanc (``POST /instances``) and to ``hie serve`` (STOW-RS as a hospital), and both
are asked the same QIDO-RS and WADO-RS metadata questions with ``dicomweb-client``.

Every answer is checked against what the files say (the truth), not only against
Orthanc: the same study, series and instance UIDs, and the values of PS3.18's
required return attributes at each level (Tables 10.6.3-3, -4 and -5; a series
query without a study in its path also returns the study's, an instance query the
series' and the study's). Where Orthanc 1.10 with its DICOMweb plugin 1.7 departs
from the standard, the test asserts what the standard says of the exchange and
names Orthanc's deviation (:data:`ORTHANC_DEVIATIONS`).
"""

from __future__ import annotations

import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from exchange_process import HospitalSystem
from peers.orthanc import start_orthanc

from benchmarks.datagen.dicom import Instance, generate_instances, readable_test_files

# PS3.18 Tables 10.6.3-3 (study), 10.6.3-4 (series), 10.6.3-5 (instance).
STUDY_KEYS = ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
              "00080201", "00081190", "00100010", "00100020", "00100030", "00100040",
              "0020000D", "00200010", "00201206", "00201208")
SERIES_KEYS = ("00080060", "00080201", "0008103E", "00081190", "0020000E", "00200011",
               "00201209", "00400244", "00400245", "00400275")
INSTANCE_KEYS = ("00080016", "00080018", "00080056", "00080201", "00081190", "00200013",
                 "00280010", "00280011", "00280100", "00280008")
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
RETRIEVE_URL, AVAILABILITY = "00081190", "00080056"
AVAILABILITY_VALUES = {"ONLINE", "NEARLINE", "OFFLINE", "UNAVAILABLE"}
COUNTS = {"00201206", "00201208", "00201209"}
MODALITIES_IN_STUDY = "00080061"
REQUEST_ATTRIBUTES = "00400275"
# the keys of Request Attributes Sequence items a QIDO-RS answer must carry
REQUEST_ATTRIBUTE_KEYS = ("00400009", "00401001")

#: Where Orthanc 1.10 / DICOMweb plugin 1.7 answers otherwise than PS3.18 asks: the
#: required return keys it leaves out. The exchange is held to the standard.
ORTHANC_OMITS = {
    # a required key at study and instance level; the plugin never returns it
    AVAILABILITY: "Instance Availability",
    # a required key at series level (with its Scheduled Procedure Step ID and
    # Requested Procedure ID) when the instances have it; the plugin leaves it out
    REQUEST_ATTRIBUTES: "Request Attributes Sequence",
}
#: ... and those it leaves out of series found without a study in the path
#: (``/series?…``), whose answers must carry the study's required keys too.
ORTHANC_OMITS_IN_SERIES_OF_ALL_STUDIES = {
    MODALITIES_IN_STUDY: "Modalities in Study",
    "00201206": "Number of Study Related Series",
    "00201208": "Number of Study Related Instances",
}
# Another deviation, of the plugin's HTTP side: it does not percent-decode query
# values, so ``PatientName=Mar%2A`` (how dicomweb-client, through requests, sends
# ``Mar*``) is matched literally. Wildcard queries go to Orthanc raw (see below).

# Bulk and binary VRs are not compared in WADO-RS metadata: both sides may answer
# them with a BulkDataURI (the exchange points at the hospital's copy).
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


# -- the truth: what the files say ----------------------------------------------------


@dataclass
class Truth:
    """The files fed to both sides, as DICOM JSON (pydicom's), by level."""

    paths: list[Path]
    instances: dict[str, dict] = field(default_factory=dict)          # SOP UID -> JSON
    series: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    studies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, path: Path) -> None:
        with warnings.catch_warnings():  # a test file's UID is invalid on purpose
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            doc = ds.to_json_dict(bulk_data_threshold=1 << 30, bulk_data_element_handler=None)
        sop = first(doc, SOP_UID)
        self.instances[sop] = doc
        self.series[first(doc, SERIES_UID)].append(sop)
        series = self.studies[first(doc, STUDY_UID)]
        if first(doc, SERIES_UID) not in series:
            series.append(first(doc, SERIES_UID))

    def study_doc(self, study: str) -> dict:
        doc = dict(self.instances[self.series[self.studies[study][0]][0]])
        doc["00201206"] = {"vr": "IS", "Value": [len(self.studies[study])]}
        doc["00201208"] = {"vr": "IS", "Value": [sum(len(self.series[s])
                                                     for s in self.studies[study])]}
        modalities = sorted({first(self.instances[self.series[s][0]], "00080060")
                             for s in self.studies[study]} - {None})
        doc[MODALITIES_IN_STUDY] = {"vr": "CS", "Value": modalities}
        return doc

    def series_doc(self, series: str) -> dict:
        doc = dict(self.instances[self.series[series][0]])
        doc["00201209"] = {"vr": "IS", "Value": [len(self.series[series])]}
        return doc

    def study_of_series(self, series: str) -> str:
        return first(self.instances[self.series[series][0]], STUDY_UID)

    def studies_where(self, test) -> set[str]:
        return {s for s in self.studies if test(self.study_doc(s))}


def first(doc: dict, tag: str):
    values = (doc.get(tag) or {}).get("Value") or [None]
    return values[0]


def comparable(element: dict | None) -> tuple | None:
    """A DICOM JSON element's values in a form both sides can be compared in:
    None when absent or empty; numbers as floats; person names as their non-empty
    component groups; strings without the padding a file may carry."""
    if not element or not element.get("Value"):
        return None
    vr = element.get("vr")
    out = []
    for v in element["Value"]:
        if vr == "PN" and isinstance(v, dict):
            out.append(tuple(sorted((k, s) for k, s in v.items() if s)))
        elif vr in {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}:
            out.append(float(v))
        elif vr == "SQ":
            out.append(tuple(sorted((t, comparable(e)) for t, e in v.items())))
        elif isinstance(v, str):
            out.append(v.strip(" \0"))
        else:
            out.append(v)
    if vr == "CS" and len(out) > 1:
        out = sorted(out)
    return tuple(out) if any(x not in ("", None, ()) for x in out) else None


def requested(element: dict | None) -> list | None:
    """Scheduled Procedure Step ID and Requested Procedure ID of each item of a
    Request Attributes Sequence (what QIDO-RS must return of it)."""
    items = (element or {}).get("Value") or []
    return [tuple(comparable(item.get(k)) for k in REQUEST_ATTRIBUTE_KEYS)
            for item in items] or None


def differences(answer: dict, truth: dict, keys: tuple[str, ...], url_suffix: str,
                base: str) -> list[str]:
    """How one QIDO-RS result departs from the truth on the required keys."""
    diffs = []
    for tag in keys:
        if tag == RETRIEVE_URL:
            url = first(answer, tag)
            if not (isinstance(url, str) and url.startswith(base) and url.endswith(url_suffix)):
                diffs.append(f"{tag} RetrieveURL {url!r}, expected {base}…{url_suffix}")
        elif tag == AVAILABILITY:
            if first(answer, tag) not in AVAILABILITY_VALUES:
                diffs.append(f"{tag} InstanceAvailability {answer.get(tag)!r}")
        elif tag == REQUEST_ATTRIBUTES:
            if requested(answer.get(tag)) != requested(truth.get(tag)):
                diffs.append(f"{tag}: answered {answer.get(tag)!r}, the files say "
                             f"{truth.get(tag)!r}")
        elif comparable(answer.get(tag)) != comparable(truth.get(tag)):
            diffs.append(f"{tag}: answered {answer.get(tag)!r}, the files say "
                         f"{truth.get(tag)!r}")
    return diffs


# -- the two sides ---------------------------------------------------------------------


@dataclass
class Side:
    name: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.base, headers=self.headers)

    def deviations(self, *, series_of_all_studies: bool = False) -> set[str]:
        """The keys this side is known to leave out (none for the exchange)."""
        if self.name != "orthanc":
            return set()
        return set(ORTHANC_OMITS) | (set(ORTHANC_OMITS_IN_SERIES_OF_ALL_STUDIES)
                                     if series_of_all_studies else set())


def stow(base: str, token: str, paths: list[Path]) -> None:
    """STOW-RS the files to the exchange, one request per study, as a hospital's
    system would: ``multipart/related; type="application/dicom"``."""
    by_study: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        by_study[str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)].append(p)
    boundary = uuid.uuid4().hex
    with httpx.Client(timeout=60, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/dicom+json",
            "Content-Type": f'multipart/related; type="application/dicom"; '
                            f"boundary={boundary}"}) as client:
        for study, members in by_study.items():
            body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom"
                            b"\r\n\r\n" + p.read_bytes() + b"\r\n" for p in members)
            body += b"--" + boundary.encode() + b"--\r\n"
            r = client.post(f"{base}/dicomweb/studies", content=body)
            assert r.status_code == 200, f"study {study}: {r.status_code} {r.text[:2000]}"
            assert "00081198" not in r.json(), r.text[:2000]
            stored = {item["00081155"]["Value"][0]
                      for item in r.json()["00081199"]["Value"]}
            assert len(stored) == len(members)


@dataclass
class Fed:
    truth: Truth
    synthetic: list[Instance]
    hie: Side
    orthanc: Side

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.hie, self.orthanc


def selection(tmp: Path) -> tuple[list[Path], list[Instance]]:
    """pydicom's readable test files that name a patient (the exchange files every
    study under a patient, found by PatientID), and a few synthetic studies."""
    tests = readable_test_files(with_patient_id=True)
    made = generate_instances(tmp, seed=20261207, instances=240)
    return [*tests, *(m.path for m in made)], made


@pytest.fixture(scope="module")
def fed(server: HospitalSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    folder = tmp_path_factory.mktemp("dicomweb-vs-orthanc")
    paths, made = selection(folder / "synthetic")
    truth = Truth(paths)
    for p in paths:
        truth.add(p)
    with start_orthanc(folder / "orthanc") as orthanc:
        results = orthanc.upload_all(paths)
        assert all(r["Status"] == "Success" for r in results)
        token = server.token()
        stow(server.base, token, paths)
        yield Fed(truth, made,
                  Side("hie", f"{server.base}/dicomweb", {"Authorization": f"Bearer {token}"}),
                  Side("orthanc", orthanc.dicomweb_url))


def _check(side: Side, answers: list[dict], level_keys: tuple[str, ...],
           truth_of, suffix_of, *, series_of_all_studies: bool = False) -> list[str]:
    skip = side.deviations(series_of_all_studies=series_of_all_studies)
    keys = tuple(k for k in level_keys if k not in skip)
    diffs = []
    for answer in answers:
        uid, doc = truth_of(answer)
        diffs += [f"{side.name} {uid}: {d}"
                  for d in differences(answer, doc, keys, suffix_of(answer), side.base)]
    return diffs


def check_studies(fed: Fed, side: Side, answers: list[dict], expected: set[str]) -> None:
    got = [first(a, STUDY_UID) for a in answers]
    assert len(got) == len(set(got)), f"{side.name}: a study answered twice"
    assert set(got) == expected, (side.name, set(got) ^ expected)
    diffs = _check(side, answers, STUDY_KEYS,
                   lambda a: (first(a, STUDY_UID), fed.truth.study_doc(first(a, STUDY_UID))),
                   lambda a: f"/studies/{first(a, STUDY_UID)}")
    assert not diffs, "\n".join(diffs[:30])


def check_series(fed: Fed, side: Side, answers: list[dict], expected: set[str], *,
                 with_study: bool) -> None:
    got = [first(a, SERIES_UID) for a in answers]
    assert len(got) == len(set(got)), f"{side.name}: a series answered twice"
    assert set(got) == expected, (side.name, set(got) ^ expected)
    keys = SERIES_KEYS + (STUDY_KEYS if with_study else ())
    keys = tuple(dict.fromkeys(k for k in keys if k != RETRIEVE_URL)) + (RETRIEVE_URL,)

    def truth_of(a: dict) -> tuple[str, dict]:
        series = first(a, SERIES_UID)
        doc = fed.truth.series_doc(series)  # an instance's attributes and the count
        if with_study:  # the study's computed attributes besides
            study = fed.truth.study_doc(fed.truth.study_of_series(series))
            doc |= {k: study[k] for k in (MODALITIES_IN_STUDY, "00201206", "00201208")}
        return series, doc

    def suffix_of(a: dict) -> str:
        series = first(a, SERIES_UID)
        return f"/studies/{fed.truth.study_of_series(series)}/series/{series}"

    diffs = _check(side, answers, keys, truth_of, suffix_of,
                   series_of_all_studies=with_study)
    assert not diffs, "\n".join(diffs[:30])


def both(fed: Fed, ask) -> Iterator[tuple[Side, list[dict]]]:
    for side in fed.sides:
        yield side, ask(side.client)


# -- QIDO-RS ----------------------------------------------------------------------------


def test_all_studies(fed: Fed) -> None:
    for side, answers in both(fed, lambda c: c.search_for_studies(limit=1000)):
        check_studies(fed, side, answers, set(fed.truth.studies))


def test_studies_by_patient_id(fed: Fed) -> None:
    for pid in ("77654033", fed.synthetic[0].patient_id):
        expected = fed.truth.studies_where(lambda d, pid=pid: first(d, "00100020") == pid)
        assert expected
        for side, answers in both(fed, lambda c, pid=pid: c.search_for_studies(
                search_filters={"PatientID": pid})):
            check_studies(fed, side, answers, expected)


def test_studies_by_study_date_range(fed: Fed) -> None:
    dates = sorted({m.study_date for m in fed.synthetic})
    low, high = dates[0], dates[len(dates) // 2]
    expected = fed.truth.studies_where(
        lambda d: low <= (first(d, "00080020") or "") <= high)
    assert expected and expected != set(fed.truth.studies)
    for side, answers in both(fed, lambda c: c.search_for_studies(
            search_filters={"StudyDate": f"{low}-{high}"})):
        check_studies(fed, side, answers, expected)


def test_studies_by_patient_name_wildcard(fed: Fed) -> None:
    # Patterns on the alphabetic group, exact case: what every reading of PS3.4
    # C.2.2.2.4 agrees on (case-insensitive and per-group PN matching are left to
    # the implementation).
    latin = next(m for m in fed.synthetic if "=" in m.patient_name or m.patient_name.isascii())
    prefix = latin.patient_name.split("^")[0][:3]
    for pattern in (f"{prefix}*", "D?e^*"):
        expected = fed.truth.studies_where(
            lambda d, pattern=pattern: fnmatchcase(
                ((first(d, "00100010") or {}).get("Alphabetic") or ""), pattern))
        assert expected
        ours = fed.hie.client.search_for_studies(search_filters={"PatientName": pattern})
        check_studies(fed, fed.hie, ours, expected)
        # the same query with the wildcards unescaped in the URL, as Orthanc needs it
        # (it matches %2A literally) — the exchange must answer it alike
        for side in fed.sides:
            r = httpx.get(f"{side.base}/studies?PatientName={pattern}",
                          headers=side.headers, timeout=30)
            assert r.status_code in (200, 204), (side.name, r.text)
            check_studies(fed, side, r.json() if r.status_code == 200 else [], expected)


def test_series_by_modality(fed: Fed) -> None:
    for modality in ("CT", "MR"):
        expected = {s for s in fed.truth.series
                    if first(fed.truth.series_doc(s), "00080060") == modality}
        assert len(expected) > 1
        for side, answers in both(fed, lambda c, modality=modality: c.search_for_series(
                search_filters={"Modality": modality})):
            check_series(fed, side, answers, expected, with_study=True)


def test_series_of_a_study(fed: Fed) -> None:
    study = max(fed.truth.studies, key=lambda s: len(fed.truth.studies[s]))
    assert len(fed.truth.studies[study]) > 1
    for side, answers in both(fed, lambda c: c.search_for_series(study)):
        check_series(fed, side, answers, set(fed.truth.studies[study]), with_study=False)


def test_instances_of_a_series(fed: Fed) -> None:
    for series in (fed.synthetic[0].series_uid, fed.synthetic[-1].series_uid):
        study = fed.truth.study_of_series(series)
        expected = set(fed.truth.series[series])
        for side, answers in both(fed, lambda c, study=study, series=series:
                                  c.search_for_instances(study, series)):
            got = [first(a, SOP_UID) for a in answers]
            assert sorted(got) == sorted(expected), side.name
            diffs = _check(side, answers, INSTANCE_KEYS,
                           lambda a: (first(a, SOP_UID), fed.truth.instances[first(a, SOP_UID)]),
                           lambda a, study=study, series=series:
                           f"/studies/{study}/series/{series}/instances/{first(a, SOP_UID)}")
            assert not diffs, "\n".join(diffs[:30])


def test_includefield_returns_the_asked_attributes(fed: Fed) -> None:
    pid = fed.synthetic[0].patient_id
    expected = fed.truth.studies_where(lambda d: first(d, "00100020") == pid)
    for side, answers in both(fed, lambda c: c.search_for_studies(
            search_filters={"PatientID": pid}, fields=["StudyDescription", "00100021"])):
        check_studies(fed, side, answers, expected)
        for a in answers:
            doc = fed.truth.study_doc(first(a, STUDY_UID))
            for tag in ("00081030", "00100021"):  # Study Description, Issuer of Patient ID
                assert comparable(a.get(tag)) == comparable(doc.get(tag)) is not None, (
                    side.name, tag, a.get(tag))


# -- WADO-RS metadata --------------------------------------------------------------------


def test_series_metadata(fed: Fed) -> None:
    picks = [fed.synthetic[0].series_uid,
             next(s for s in fed.truth.series if not s.startswith("1.2.826.0.1.3680043.8.498"))]
    for series in picks:
        study = fed.truth.study_of_series(series)
        for side, answers in both(fed, lambda c, study=study, series=series:
                                  c.retrieve_series_metadata(study, series)):
            got = {first(a, SOP_UID): a for a in answers}
            assert set(got) == set(fed.truth.series[series]), side.name
            diffs = []
            for sop, answer in got.items():
                doc = fed.truth.instances[sop]
                for tag, element in doc.items():
                    # group lengths (gggg,0000) are encoding, not content: not in
                    # the native DICOM model that DICOM JSON represents
                    if (element.get("vr") in _BINARY_VRS or tag.startswith("0002")
                            or tag.endswith("0000")):
                        continue
                    if comparable(answer.get(tag)) != comparable(element):
                        diffs.append(f"{sop} {tag}: {answer.get(tag)!r} != {element!r}")
            assert not diffs, "\n".join(diffs[:30])
