"""``hie-adapter fhir PATH``: a folder of FHIR Bundles (``*.json``) or NDJSON
exports (``*.ndjson``, one resource a line).

A transaction Bundle goes to the outbox as it is (its author chose its
semantics). Collection, batch and searchset Bundles and NDJSON resources are
turned into transaction Bundles following the sources' rule (``sources/__init__``):
each resource with an identifier becomes ``PUT Type?identifier=system|value``,
references between resources of one Bundle become ``urn:uuid:`` references, and
references to patients sent earlier become ``Patient?identifier=…``. NDJSON is
grouped per patient (one message per patient, in chunks of ``CHUNK`` entries).

A file is read whole before anything is queued; all its messages (and the patient
identifiers it taught us) go into the outbox in one commit, and only then is it
moved to ``PATH/.done/``; a file that cannot be parsed goes to ``PATH/.failed/``
with ``<name>.reason.txt``. A crash between queueing and moving re-reads the file on
the next run, which the conditional updates make harmless.

A backfill moves a lot of JSON, and the adapter shares the machine with whatever
else runs there (often the exchange itself): parsing and serialising use orjson,
resources parsed from a file are rewritten in place rather than copied, and a
transaction Bundle is queued as the file's own bytes.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from adapters.outbox import NewMessage, Outbox

CHUNK = 200
#: a ``"reference": "…"`` member in orjson's compact output (a quote inside a JSON
#: string is escaped, so this never matches inside another string)
_REFERENCE = re.compile(rb'"reference":"((?:[^"\\]|\\.)*)"')
SETTLE_SECONDS = 1.0
SOURCE = "fhir-files"
# Patients first: later files (Observation.ndjson, …) refer to them by identifier.
_PATIENT_FIRST = ("patient",)


class SourceError(ValueError):
    """A file that is not what this source reads; the message is the reason."""


@dataclass
class Summary:
    """What a run did, for the summary line."""

    files: int = 0
    failed: int = 0
    messages: int = 0
    resources: int = 0
    not_idempotent: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = (f"{self.files} file(s) queued, {self.failed} failed, {self.messages} "
                f"message(s), {self.resources} resource(s)")
        if self.not_idempotent:
            text += f"; {self.not_idempotent} resource(s) without identifier (POST, not " \
                    "idempotent)"
        return text


def condition(resource: dict[str, Any]) -> str | None:
    """``identifier=system|value`` of the resource's first full identifier, or None."""
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            return "identifier=" + quote(f"{ident['system']}|{ident['value']}", safe=":/|")
    return None


def _refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``{"reference": …}`` object inside a resource."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                yield item
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


def _patient_ref(resource: dict[str, Any]) -> str | None:
    for key in ("subject", "patient", "beneficiary"):
        ref = (resource.get(key) or {}).get("reference") if isinstance(
            resource.get(key), dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref
    return None


class FhirFolder:
    """Reads one folder into ``outbox``."""

    def __init__(self, path: str | Path, outbox: Outbox, *, progress: bool = True,
                 id_system: str | None = None) -> None:
        self.path = Path(path)
        #: with it, a resource without an identifier but with a local id gets the
        #: identifier ``id_system|Type/id``, so it too is sent as a conditional update
        self.id_system = id_system
        self.outbox = outbox
        self.progress = progress
        self.done_dir = self.path / ".done"
        self.failed_dir = self.path / ".failed"
        self.summary = Summary()
        self._memo_prefix = f"{self.path.resolve()}:"
        # local patient id → identifier condition: committed ones (also in the outbox)
        # and those of the file being read (committed with its messages)
        self._known: dict[str, str] = {}
        self._learned: dict[str, str] = {}

    # -- files ---------------------------------------------------------------------

    def pending(self, *, settle: float = 0.0) -> list[Path]:
        """Files to read, patients first; with ``settle``, only those unchanged for that
        long (a file still being written is left for the next poll)."""
        now = time.time()
        files = [p for p in self.path.iterdir() if p.is_file()
                 and p.suffix in (".json", ".ndjson") and not p.name.startswith(".")
                 and now - p.stat().st_mtime >= settle]
        return sorted(files, key=lambda p: (not p.name.lower().startswith(_PATIENT_FIRST),
                                            p.name))

    def run_once(self, *, settle: float = 0.0) -> Summary:
        """Queue every file present now; progress bar to stderr."""
        files = self.pending(settle=settle)
        for i, file in enumerate(files, 1):
            self.process(file)
            if self.progress:
                self._bar(i, len(files))
        if self.progress and files:
            print(file=sys.stderr)
        return self.summary

    def process(self, file: Path) -> None:
        """Read ``file``, queue its messages, move it aside."""
        self._learned = {}
        try:
            messages = self.messages(file)
        except (SourceError, ValueError, UnicodeDecodeError) as exc:
            self._learned = {}
            self._move(file, self.failed_dir)
            (self.failed_dir / f"{file.name}.reason.txt").write_text(f"{exc}\n")
            self.summary.failed += 1
            self.summary.failures.append(f"{file.name}: {exc}")
            return
        source = f"{SOURCE}:{file.name}"
        # One commit (one fsync) for the whole file, its patients' identifiers included:
        # the file is moved aside only once every message of it is on disk.
        self.outbox.put_many(
            [NewMessage(key, payload, source) for key, payload, _ in messages],
            remember={self._memo_prefix + ref: cond for ref, cond in self._learned.items()})
        self._known.update(self._learned)
        self._learned = {}
        self.summary.messages += len(messages)
        self.summary.resources += sum(n for _, _, n in messages)
        self._move(file, self.done_dir)
        self.summary.files += 1

    def _move(self, file: Path, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        target = folder / file.name
        if target.exists():  # the same name dropped again later: keep both
            target = folder / f"{file.stem}.{time.strftime('%Y%m%dT%H%M%S')}" \
                              f"-{uuid.uuid4().hex[:6]}{file.suffix}"
        os.replace(file, target)

    def _bar(self, i: int, n: int) -> None:
        width = 30
        filled = width * i // max(n, 1)
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {i}/{n} files, "
              f"{self.summary.resources} resources queued", end="", file=sys.stderr, flush=True)

    # -- parsing -------------------------------------------------------------------

    def messages(self, file: Path) -> list[tuple[str, bytes, int]]:
        """(patient_key, transaction Bundle as JSON, entries) of a file; raises
        SourceError."""
        raw = file.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a BOM
        if file.suffix == ".ndjson":
            resources = []
            for n, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    resources.append(self._resource(_parse(line, f"line {n}"), f"line {n}"))
            self._identify(resources)
            return self._grouped(resources)
        bundle = _parse(raw, "file")
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise SourceError("a .json file must hold one Bundle")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("resource"), dict) for e in entries):
            raise SourceError("every Bundle.entry needs a resource")
        if not entries:
            return []
        resources = [self._resource(e["resource"], f"entry {i}") for i, e in enumerate(entries)]
        if bundle.get("type") == "transaction":
            self._remember_patients(resources)
            # its author chose its semantics: sent as the file's own bytes
            return [(self._key(resources), raw, len(entries))]
        if bundle.get("type") not in ("collection", "batch", "searchset"):
            raise SourceError(f"Bundle.type {bundle.get('type')!r} is not transaction, "
                              "collection, batch or searchset")
        full_urls = [e.get("fullUrl") for e in entries]
        self._identify(resources)
        self._remember_patients(resources)
        key = self._key(resources)
        return [(key, self.transaction(resources, full_urls), len(entries))]

    @staticmethod
    def _resource(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise SourceError(f"{where}: not a FHIR resource")
        return value

    def _grouped(self, resources: list[dict[str, Any]]) -> list[tuple[str, bytes, int]]:
        self._remember_patients(resources)
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in resources:
            ref = f"Patient/{r.get('id')}" if r["resourceType"] == "Patient" \
                else _patient_ref(r) or ""
            groups.setdefault(ref, []).append(r)
        out = []
        for group in groups.values():
            group.sort(key=lambda r: r["resourceType"] != "Patient")
            for start in range(0, len(group), CHUNK):
                chunk = group[start:start + CHUNK]
                key = self._key(chunk)  # before transaction() takes the resources
                out.append((key, self.transaction(chunk, [None] * len(chunk)), len(chunk)))
        return out

    def _identify(self, resources: list[dict[str, Any]]) -> None:
        """With ``id_system``: the local id as the identifier of resources that have none."""
        if not self.id_system:
            return
        for r in resources:
            if condition(r) is None and isinstance(r.get("id"), str) and r["id"]:
                idents = r.get("identifier") if isinstance(r.get("identifier"), list) else []
                r["identifier"] = [*idents, {"system": self.id_system,
                                             "value": f"{r['resourceType']}/{r['id']}"}]

    def _remember_patients(self, resources: list[dict[str, Any]]) -> None:
        """Note the identifiers of the file's patients; :meth:`process` commits them with
        the file's messages."""
        for r in resources:
            cond = condition(r) if r["resourceType"] == "Patient" else None
            if cond and isinstance(r.get("id"), str):
                self._learned[f"Patient/{r['id']}"] = cond

    def _patient_condition(self, ref: str) -> str | None:
        cond = self._learned.get(ref) or self._known.get(ref)
        if cond is None:
            cond = self.outbox.recall(self._memo_prefix + ref)
            if cond is not None:
                self._known[ref] = cond
        return cond

    def _key(self, resources: list[dict[str, Any]]) -> str:
        """The patient a message is about: its identifier condition when known."""
        for r in resources:
            if r["resourceType"] == "Patient":
                cond = condition(r)
                if cond:
                    return cond
        for r in resources:
            ref = _patient_ref(r)
            if ref:
                return self._patient_condition(ref) or ref
            for node in _refs(r):
                if node["reference"].startswith("Patient?"):
                    return node["reference"].removeprefix("Patient?")
        return "no-patient"

    def transaction(self, resources: list[dict[str, Any]],
                    full_urls: list[str | None]) -> bytes:
        """A transaction Bundle (JSON) of conditional updates for ``resources``, which
        become its entries' resources (changed in place: no ``id``/``meta``).

        References are rewritten in the serialised Bundle, not by walking every node
        of every resource (that walk was most of the source's CPU): a local reference
        (``Type/id`` or another entry's ``fullUrl``) becomes the entry's ``urn:uuid``,
        one to a patient sent earlier ``Patient?identifier=…``."""
        local: dict[str, str] = {}
        urns = []
        for r, full_url in zip(resources, full_urls, strict=True):
            urn = f"urn:uuid:{uuid.uuid4()}"
            urns.append(urn)
            if isinstance(r.get("id"), str):
                local[f"{r['resourceType']}/{r['id']}"] = urn
            if full_url:
                local[full_url] = urn
        entries = []
        for r, urn in zip(resources, urns, strict=True):
            r.pop("id", None)
            r.pop("meta", None)
            cond = condition(r)
            if cond:
                request = {"method": "PUT", "url": f"{r['resourceType']}?{cond}"}
            else:
                request = {"method": "POST", "url": r["resourceType"]}
                self.summary.not_idempotent += 1
            entries.append({"fullUrl": urn, "resource": r, "request": request})
        body = orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                             "entry": entries})

        def rewrite(match: re.Match[bytes]) -> bytes:
            raw = match.group(1)
            ref = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
            new = local.get(ref)
            if new is None and ref.startswith("Patient/"):
                cond = self._patient_condition(ref)
                new = f"Patient?{cond}" if cond else None
            return match.group(0) if new is None else b'"reference":' + orjson.dumps(new)

        return _REFERENCE.sub(rewrite, body)


def _parse(text: bytes, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{where}: not JSON ({exc})") from exc
