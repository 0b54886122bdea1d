"""The FHIR face of stored studies: each hospital's study as an ``ImagingStudy``.

STOW-RS writes the DICOM records (what QIDO-RS and WADO-RS answer from) and
marks the study record *pending*; :class:`StudyWriter`, a task of the exchange
process, then writes the study's ``ImagingStudy`` from the study's records —
within about a second, one version for however many requests brought
instances meanwhile, so a study sent one instance per request does not make a
version per instance, each with every instance so far. The mark is in the
store, so a study marked before a crash is written at the next start; with
several workers the study's lock serialises them and the mark, read again
under it, makes the later one a no-op.

The ImagingStudy is written through the FHIR write engine as the hospital that
sent the instances (its Provenance, audit record, search indexes and write
hooks, among them :func:`hie.dicomweb.labels.relabel_hook`), keeping the
sensitivity labels the hospital set on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from hie.context import SOURCE_PREFIX, RequestContext
from hie.dicomweb import records
from hie.dicomweb.records import (
    INSTANCE_TYPE,
    PENDING,
    PENDING_PARAM,
    SERIES_TYPE,
    SERIES_UID,
    STUDY_TYPE,
    STUDY_UID,
    UID_SYSTEM,
)
from hie.fhir import writes
from hie.store.base import Store, Transaction, WriteRecord
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch
from imaging.fhirmap import INSTANCE_TAGS, imaging_study
from imaging.levels import level_view

log = logging.getLogger("hie.dicomweb.studies")

#: A study is written once it received nothing for this long (s) — more
#: instances of a study usually follow — or after MAX_WAIT at the latest.
QUIET = 1.0
MAX_WAIT = 15.0
#: How often it looks for marked studies when nobody tells it (another worker
#: stored them, or they were marked before a restart).
POLL = 5.0


def _identifier(uid: str) -> list[tuple[str, str]]:
    return [("identifier", f"{UID_SYSTEM}|urn:oid:{uid}")]


async def _current_study(tx: Transaction, org_source: str, uid: str) -> dict[str, Any] | None:
    query = SearchQuery("ImagingStudy", where=(AnyOf((TokenMatch(
        "identifier", f"urn:oid:{uid}", UID_SYSTEM),)),),
        restriction=Restriction(sources=frozenset({org_source})))
    keys = await tx.search_keys(query, 1)
    if not keys:
        return None
    current = await tx.read(*keys[0])
    return orjson.loads(current.body) if current is not None and not current.deleted else None


async def labels_of_study(tx: Transaction, org_source: str, uid: str) -> list[records.Label]:
    """The labels of the hospital's ImagingStudy of ``uid`` (a hospital may make
    and label it through FHIR before the images arrive)."""
    study = await _current_study(tx, org_source, uid)
    security = ((study or {}).get("meta") or {}).get("security") or []
    return sorted({(s.get("system", ""), s["code"]) for s in security if s.get("code")})


async def write_study(tx: Transaction, rid: str, hooks: Sequence[writes.WriteHook]) -> bool:
    """Write the ImagingStudy of the study record ``rid`` if it is marked;
    return whether it was."""
    rec = await tx.read(STUDY_TYPE, rid)
    if rec is None or not records.is_pending(rec) or rec.source is None:
        return False
    patient_ref, dataset = records.unpack(rec)
    uid = records.first(dataset, STUDY_UID)
    org_source = records.org_source(rec.source) or ""
    await tx.lock(records.study_lock(org_source, uid))
    rec = await tx.read(STUDY_TYPE, rid)  # again, under the lock
    if rec is None or not records.is_pending(rec):
        return False
    series: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    async for found in records.study_records(tx, SERIES_TYPE, uid, rec.source):
        ds = records.unpack(found)[1]
        series[records.first(ds, SERIES_UID)] = (level_view(ds, "series"), [])
    endpoint = None
    async for found in records.study_records(tx, INSTANCE_TYPE, uid, rec.source):
        ds = records.unpack(found)[1]
        sid = records.first(ds, SERIES_UID)
        if sid not in series:
            series[sid] = (level_view(ds, "series"), [])
        # only what imaging_study reads: a whole study's instance data sets held
        # at once would be costly to keep, and to trace for the garbage collector
        series[sid][1].append({tag: ds[tag] for tag in INSTANCE_TAGS if tag in ds})
        endpoint = endpoint or source_base(ds)
    for _, instances in series.values():
        instances.sort(key=lambda d: (_number(d), records.first(d, records.SOP_UID)))
    study = imaging_study(level_view(dataset, "study"), list(series.values()),
                          subject=patient_ref, endpoint=endpoint)
    before = await _current_study(tx, org_source, uid)
    security = ((before or {}).get("meta") or {}).get("security")
    if security:  # labels the hospital set on the study stay
        study["meta"] = {"security": security}
    ctx = RequestContext(organization=org_source.removeprefix(SOURCE_PREFIX))
    stamp = writes.stamp_now()
    await writes.execute_in(tx, ctx, [writes.WriteEntry(
        "PUT", "ImagingStudy", resource=study, condition=_identifier(uid))],
        stamp=stamp, hooks=hooks)
    # the mark goes (the relabel hook may have written the record meanwhile)
    rec = await tx.read(STUDY_TYPE, rid)
    assert rec is not None
    patient_ref, dataset = records.unpack(rec)
    labels = records.labels_of(rec)
    patient = patient_ref.split("/", 1)[1]
    await tx.put(WriteRecord(STUDY_TYPE, rec.id, rec.version + 1, stamp,
                             records.body(patient_ref, dataset, labels), source=rec.source,
                             index=records.index(dataset, patient, labels)))
    return True


async def write_pending(store: Store, hooks: Sequence[writes.WriteHook], *,
                        quiet: float = 0.0, max_wait: float = 0.0,
                        limit: int = 1000) -> tuple[int, int]:
    """Write the ImagingStudy of marked studies: of every one (``quiet=0``), or
    of those that received nothing for ``quiet`` seconds or have waited
    ``max_wait`` seconds — a study still arriving is written once, when it is
    done, not after every request. Returns (written, left for later)."""
    now = datetime.now(UTC)
    quiet_since = writes.stamp_of(now - timedelta(seconds=quiet))
    waited_since = writes.stamp_of(now - timedelta(seconds=max_wait))
    page = await store.search(SearchQuery(STUDY_TYPE, where=(AnyOf((TokenMatch(
        PENDING_PARAM, PENDING, ""),)),)), limit=limit)
    written = later = 0
    for rec in page.resources:
        since = records.pending_since(rec) or ""
        if quiet and rec.last_updated > quiet_since and since > waited_since:
            later += 1
            continue
        if await store.transact(lambda tx, rid=rec.id: write_study(tx, rid, hooks)):
            written += 1
    return written, later + (1 if page.next is not None else 0)


class StudyWriter:
    """The task that writes the ImagingStudy of marked studies."""

    def __init__(self, store: Store, hooks: Callable[[], Sequence[writes.WriteHook]], *,
                 quiet: float = QUIET, max_wait: float = MAX_WAIT, poll: float = POLL) -> None:
        self.store = store
        self.hooks = hooks
        self.quiet = quiet
        self.max_wait = max_wait
        self.poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="imaging-study-writer")

    def notify(self) -> None:
        """A study was marked: write it once it is quiet."""
        self._wake.set()

    async def flush(self) -> int:
        """Write every marked study now; return how many."""
        written = 0
        while True:
            async with self._lock:
                done, left = await write_pending(self.store, self.hooks())
            written += done
            if not done or not left:
                return written

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()  # what is marked now, before the store closes

    async def _run(self) -> None:
        left = 1  # at start: what was marked before a restart
        while True:
            if not left:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                self._wake.clear()
            await asyncio.sleep(self.quiet)
            try:
                async with self._lock:
                    _, left = await write_pending(self.store, self.hooks(), quiet=self.quiet,
                                                  max_wait=self.max_wait)
            except Exception:  # noqa: BLE001 — kept marked; the next round tries again
                log.exception("writing marked ImagingStudy resources failed")
                left = 0


def _number(dataset: dict[str, Any]) -> int:
    values = (dataset.get("00200013") or {}).get("Value") or [0]
    try:
        return int(values[0])
    except (TypeError, ValueError):
        return 0


def source_base(dataset: dict[str, Any]) -> str | None:
    """The source PACS's WADO-RS base, from an instance's RetrieveURL there."""
    url = records.first(dataset, records.RETRIEVE_URL)
    base, sep, _ = url.partition("/studies/")
    return base if sep and base.startswith(("http://", "https://")) else None
