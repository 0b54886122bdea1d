"""QIDO-RS and WADO-RS metadata over the DICOM records, under the caller's
restriction.

A QIDO query is compiled into a store query on the indexed attributes (UIDs,
PatientID, AccessionNumber, Modality, PatientName prefixes, StudyDate
ranges), with the caller's restriction inside it; every candidate the indexes
return is then matched against the whole query with PS3.4 semantics
(:func:`imaging.qido.matches`) before ``offset`` and ``limit`` apply. So what
the indexes cannot express (``?`` wildcards, sequence matching, times) is
still matched exactly, and what the caller may not see is never a candidate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from hie.dicomweb import records
from hie.dicomweb.records import (
    DATE_TAGS,
    INSTANCE_TYPE,
    PATIENT_ID,
    PATIENT_PARAM,
    SERIES_UID,
    SOP_UID,
    STRING_TAGS,
    STUDY_TYPE,
    STUDY_UID,
    TOKEN_TAGS,
    TYPE_OF,
)
from hie.store.base import Store, StoredResource
from hie.store.query import (
    AnyOf,
    Condition,
    DateMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    StringMatch,
    TokenMatch,
)
from imaging.qido import Match, QidoQuery, matches

#: Records read from the store per round trip while matching.
BATCH = 500
#: Most candidates one query may look at (bounds the work of a query whose
#: conditions the indexes cannot narrow).
MAX_SCANNED = 200_000


@dataclass(slots=True)
class Found:
    """One page of QIDO results and whether more would have matched."""

    records: list[StoredResource]
    more: bool = False


def compile_query(query: QidoQuery, *, restriction: Restriction,
                  same_patient: dict[str, tuple[str, ...]] | None = None) -> SearchQuery:
    """The store query for the indexed part of ``query``. ``same_patient``
    maps a PatientID value to the Patients (all hospitals) of the person the
    caller's own hospital registered with it: such a key also matches those
    Patients' records, whatever their PatientID at their hospital."""
    where: list[AnyOf] = []
    for m in query.matches:
        if m.tag == PATIENT_ID and m.kind == "single" and same_patient and m.value in same_patient:
            terms: list[Condition] = [TokenMatch(PATIENT_ID, m.value)]
            terms += [ReferenceMatch(PATIENT_PARAM, pid, "Patient")
                      for pid in same_patient[m.value]]
            where.append(AnyOf(tuple(terms)))
            continue
        cond = _condition(m)
        if cond is not None:
            where.append(cond)
    where += date_conditions(query)
    return SearchQuery(TYPE_OF[query.level], where=tuple(where),
                       restriction=records.dicom_view(restriction))


def _condition(m: Match) -> AnyOf | None:
    if m.tag in TOKEN_TAGS:
        if m.kind == "single" and m.value:
            return AnyOf((TokenMatch(m.tag, m.value),))
        if m.kind == "uids" and m.values:
            return AnyOf(tuple(TokenMatch(m.tag, v) for v in m.values))
        return None
    if m.tag in STRING_TAGS and m.kind in ("single", "wildcard") and m.value:
        prefix = m.value
        for ch in "*?":
            prefix = prefix.split(ch, 1)[0]
        prefix = " ".join(prefix.replace("^", " ").split()).casefold()
        return AnyOf((StringMatch(m.tag, prefix, "start"),)) if prefix else None
    return None


def date_conditions(query: QidoQuery) -> list[AnyOf]:
    """StudyDate values and ranges: ``ge`` the low day and ``le`` the high one
    (each one condition; an open end gives none)."""
    out: list[AnyOf] = []
    for m in query.matches:
        if m.tag not in DATE_TAGS or m.kind not in ("single", "range"):
            continue
        low = m.value if m.kind == "single" else m.low
        high = m.value if m.kind == "single" else m.high
        low_day = records.day_range((low or "").strip()[:8])
        high_day = records.day_range((high or "").strip()[:8])
        if low_day:
            out.append(AnyOf((DateMatch(m.tag, "ge", *low_day),)))
        if high_day:
            out.append(AnyOf((DateMatch(m.tag, "le", *high_day),)))
    return out


async def search(store: Store, query: QidoQuery, compiled: SearchQuery, *,
                 post: QidoQuery, limit: int) -> Found:
    """Up to ``limit`` records matching ``post`` after ``query.offset``."""
    found = Found([])
    skipped = 0
    async for rec in _candidates(store, compiled):
        _, dataset = records.unpack(rec)
        if not matches(dataset, post):
            continue
        if skipped < query.offset:
            skipped += 1
            continue
        if len(found.records) == limit:
            found.more = True
            break
        found.records.append(rec)
    return found


async def _candidates(store: Store, query: SearchQuery) -> AsyncIterator[StoredResource]:
    cursor = None
    scanned = 0
    while scanned < MAX_SCANNED:
        page = await store.search(query, limit=BATCH, cursor=cursor)
        for rec in page.resources:
            yield rec
        scanned += len(page.resources)
        if page.next is None:
            return
        cursor = page.next


async def instances(store: Store, *, study: str, series: str | None = None,
                    sop: str | None = None, restriction: Restriction) -> list[StoredResource]:
    """Every visible instance record of a study (or one series, or one instance)."""
    where = [AnyOf((TokenMatch(STUDY_UID, study),))]
    if series is not None:
        where.append(AnyOf((TokenMatch(SERIES_UID, series),)))
    if sop is not None:
        where.append(AnyOf((TokenMatch(SOP_UID, sop),)))
    query = SearchQuery(INSTANCE_TYPE, where=tuple(where),
                        restriction=records.dicom_view(restriction))
    return [rec async for rec in _candidates(store, query)]


async def patients_of_uids(store: Store, uids: Iterable[tuple[str, str]],
                           limit: int = 20) -> list[str]:
    """The Patients (ids) whose studies, series or instances have these UIDs,
    in any hospital — an unrestricted look-up that only finds whose records
    they are, so that the consent gate can decide; the restricted query that
    follows is what the caller gets."""
    found: dict[str, None] = {}
    for tag, uid in uids:
        rtype = {STUDY_UID: STUDY_TYPE, SERIES_UID: TYPE_OF["series"],
                 SOP_UID: INSTANCE_TYPE}[tag]
        page = await store.search(SearchQuery(rtype, where=(AnyOf((TokenMatch(tag, uid),)),)),
                                  limit=limit)
        for rec in page.resources:
            for ref in records.patient_of(rec):
                found[ref.split("/", 1)[1]] = None
        if len(found) >= limit:
            break
    return list(found)[:limit]


#: Attributes a study or series record computes that results of lower levels
#: must carry too (PS3.18 10.6.3.3: a query not scoped to one study returns
#: the study's attributes).
_STUDY_COMPUTED = (records.MODALITIES_IN_STUDY, records.SOP_CLASSES_IN_STUDY,
                   records.STUDY_SERIES_COUNT, records.STUDY_INSTANCE_COUNT)
_SERIES_COMPUTED = (records.SERIES_INSTANCE_COUNT,)


class Parents:
    """The computed attributes of the study and series a result belongs to,
    read once per request."""

    def __init__(self, store: Store, restriction: Restriction) -> None:
        self.store = store
        self.restriction = records.dicom_view(restriction)
        self._cache: dict[tuple[str, str], dict] = {}

    async def computed(self, rec: StoredResource, dataset: dict, *, study: bool,
                       series: bool) -> dict:
        """The computed attributes to add to ``dataset`` (of record ``rec``)."""
        out: dict = {}
        study_uid = records.first(dataset, STUDY_UID)
        series_uid = records.first(dataset, SERIES_UID)
        source = rec.source or ""
        if study:
            out.update(await self._read(STUDY_TYPE, records.record_id(source, study_uid),
                                        _STUDY_COMPUTED))
        if series:
            out.update(await self._read(TYPE_OF["series"],
                                        records.record_id(source, study_uid, series_uid),
                                        _SERIES_COMPUTED))
        return out

    async def _read(self, rtype: str, rid: str, tags: tuple[str, ...]) -> dict:
        key = (rtype, rid)
        if key not in self._cache:
            found = await self.store.read(rtype, rid, restriction=self.restriction)
            dataset = records.unpack(found)[1] if found is not None and not found.deleted \
                else {}
            self._cache[key] = {t: dataset[t] for t in tags if t in dataset}
        return self._cache[key]
