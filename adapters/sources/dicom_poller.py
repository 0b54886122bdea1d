"""``hie-adapter dicom --pacs URL``: poll a PACS that speaks DICOMweb.

Each poll asks QIDO-RS for the studies (``GET {pacs}/studies``, paged with
``limit``/``offset``, with their NumberOfStudyRelatedInstances) and, for every
study whose instance count differs from what the poller remembers, reads WADO-RS
metadata (``GET {pacs}/studies/{uid}/metadata``). Every instance not sent yet
goes through ``imaging.jsonparse.instance_from_json`` and ``to_dicom_json`` into the
outbox as a ``dicom`` message whose RetrieveURL and BulkDataURIs point at the
PACS itself (``{pacs}/studies/{s}/series/{se}/instances/{i}``): the PACS keeps
the pixels.

What has been sent is remembered in the outbox's memory (``remember``/``recall``),
per study: the instance count and the SOP Instance UIDs queued. A study's memory
is written only after all its instances are in the outbox, so a crash re-queues
at most one study, which the exchange's idempotence makes harmless.

The high-water mark is the latest StudyDate seen; later polls ask only for
``StudyDate >= mark - lookback_days`` (studies sent to the PACS late, a day or
two after they were made, are still found), and every ``full_every`` seconds (and
on the first poll) the poller lists everything, which also finds studies with
no StudyDate. A changed instance with an unchanged count is not noticed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from adapters.sources import dicom_messages
from adapters.sources.dicom_messages import OutboxLike
from imaging.errors import DicomError
from imaging.jsonmodel import to_dicom_json
from imaging.jsonparse import instance_from_json

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
STUDY_UID, STUDY_DATE, STUDY_COUNT = "0020000D", "00080020", "00201208"


class RecallingOutbox(OutboxLike, Protocol):
    """The outbox with its small durable memory."""

    def remember(self, key: str, value: str) -> None: ...

    def recall(self, key: str) -> str | None: ...


@dataclass
class PollSummary:
    """What one poll did."""

    studies: int = 0
    changed: int = 0
    instances: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.studies} stud(ies) listed, {self.changed} read, {self.instances} "
                f"instance(s) queued, {self.failed} refused")


def _value(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


class PacsPoller:
    """Reads one DICOMweb PACS into ``outbox``."""

    def __init__(self, pacs: str, outbox: RecallingOutbox, *,
                 http: httpx.Client | None = None, page: int = 100,
                 lookback_days: int = 7, full_every: float = 24 * 3600.0,
                 source: str = "dicom-pacs") -> None:
        self.pacs = pacs.rstrip("/")
        self.outbox = outbox
        self.http = http or httpx.Client(timeout=60.0)
        self.page = page
        self.lookback_days = lookback_days
        self.full_every = full_every
        self.source = source

    # -- memory ------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return f"dicom-pacs:{self.pacs}:{name}"

    def _recall_json(self, name: str) -> Any:
        text = self.outbox.recall(self._key(name))
        return json.loads(text) if text else None

    def _remember_json(self, name: str, value: Any) -> None:
        self.outbox.remember(self._key(name), json.dumps(value, separators=(",", ":")))

    # -- polling -----------------------------------------------------------------------

    def poll_once(self) -> PollSummary:
        """List studies, queue every instance not queued before; raises httpx errors
        when the PACS cannot be read (nothing is marked as seen then)."""
        summary = PollSummary()
        mark = self._recall_json("mark") or {}
        full = not mark.get("date") or time.time() - mark.get("full", 0) >= self.full_every
        params: dict[str, str] = {}
        if not full:
            since = dt.datetime.strptime(mark["date"], "%Y%m%d").date() \
                - dt.timedelta(days=self.lookback_days)
            params["StudyDate"] = f"{since:%Y%m%d}-"
        latest = mark.get("date") or ""
        # a study dated in the future (a wrong modality clock) must not move the mark
        # past the studies still to come
        tomorrow = f"{dt.date.today() + dt.timedelta(days=1):%Y%m%d}"
        for study in self._studies(params):
            summary.studies += 1
            uid, date = _value(study, STUDY_UID), _value(study, STUDY_DATE)
            if not isinstance(uid, str):
                continue
            if isinstance(date, str) and len(date) == 8 and date.isdigit():
                latest = max(latest, min(date, tomorrow))
            count = _value(study, STUDY_COUNT)
            known = self._recall_json(f"study:{uid}") or {}
            if isinstance(count, int) and known.get("n") == count:
                continue
            summary.changed += 1
            self._study(uid, count, known, summary)
        new_mark = {"date": latest or None, "full": time.time() if full else mark.get("full", 0)}
        self._remember_json("mark", new_mark)
        return summary

    def _studies(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every study QIDO-RS lists for ``params``, page by page."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            query = [*params.items(), ("includefield", STUDY_COUNT),
                     ("includefield", STUDY_DATE), ("limit", str(self.page)),
                     ("offset", str(offset))]
            r = self.http.get(f"{self.pacs}/studies", params=query,
                              headers={"Accept": DICOM_JSON})
            if r.status_code == 204:
                break
            r.raise_for_status()
            page = r.json() if r.content else []
            out.extend(d for d in page if isinstance(d, dict))
            if len(page) < self.page:
                break
            offset += len(page)
        return out

    def _study(self, uid: str, count: Any, known: dict[str, Any],
               summary: PollSummary) -> None:
        """Queue the study's instances not queued before, then remember them."""
        r = self.http.get(f"{self.pacs}/studies/{uid}/metadata",
                          headers={"Accept": DICOM_JSON})
        if 400 <= r.status_code < 500 and r.status_code not in (401, 403, 408, 429):
            # the PACS lists the study but will not describe it (Orthanc: one Study
            # Instance UID under two patients); not retried until the study changes
            reason = f"study {uid}: metadata answered {r.status_code}"
            summary.failed += 1
            summary.failures.append(reason)
            log.warning("PACS %s: %s", self.pacs, reason)
            self._remember_json(f"study:{uid}", known | {"n": count, "error": reason})
            return
        r.raise_for_status()
        instances = [d for d in r.json() if isinstance(d, dict)]
        seen = set(known.get("sops") or [])
        queued: list[tuple[str, dict[str, Any]]] = []
        for item in instances:
            sop = _value(item, "00080018")
            if not isinstance(sop, str) or sop in seen:
                continue
            try:
                instance = instance_from_json(item)
                url = dicom_messages.instance_url(self.pacs, instance.study_uid,
                                                  instance.series_uid, instance.sop_uid)
                document = to_dicom_json(instance, instance_url=url)
                refused = dicom_messages.refusal(document)
            except DicomError as exc:
                refused = exc.reason
            if refused:
                summary.failed += 1
                summary.failures.append(f"{sop}: {refused}")
                log.warning("PACS instance %s of study %s refused: %s", sop, uid, refused)
            else:
                queued.append((instance.sop_uid, document))
            seen.add(sop)  # a refused instance is not read again until the study changes
        memo = json.dumps({"n": len(instances), "sops": sorted(seen)}, separators=(",", ":"))
        # the instances and the study's memory in one commit: both or neither
        dicom_messages.put_all(self.outbox, queued, source=f"{self.source}:{self.pacs}",
                               remember={self._key(f"study:{uid}"): memo})
        summary.instances += len(queued)

    def run(self, *, interval: float = 30.0, stop: Any = None) -> None:
        """Poll every ``interval`` seconds until ``stop`` (a threading.Event) is set;
        a PACS that cannot be reached is logged and tried again at the next poll."""
        while stop is None or not stop.is_set():
            try:
                summary = self.poll_once()
                if summary.instances or summary.failed:
                    log.info("PACS poll: %s", summary.line())
            except httpx.HTTPError as exc:
                log.warning("PACS %s: %s; trying again in %.0f s", self.pacs, exc, interval)
            if stop is None:
                time.sleep(interval)
            elif stop.wait(interval):
                return
