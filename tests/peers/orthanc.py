"""A real Orthanc (Debian's ``orthanc`` with the ``orthanc-dicomweb`` plugin) as a
peer for tests and benchmarks, and DCMTK's ``storescu`` to send it (or any C-STORE
SCP) DICOM files.

>>> with start_orthanc(tmp_path) as orthanc:
...     orthanc.upload(Path("ct.dcm"))
...     httpx.get(f"{orthanc.dicomweb_url}/studies").json()

Orthanc 1.10 has no option to choose the address it binds (its HTTP and DICOM
servers would listen on every interface), so it runs with :mod:`peers.loopback`'s
``LD_PRELOAD`` shim, which turns its wildcard binds into binds to 127.0.0.1; and
``"RemoteAccessAllowed": false`` makes the HTTP server refuse every client but the
local host besides. Everything here connects to 127.0.0.1 only.

Orthanc is configured as one would tune it for ingest: no compression of the
storage area, no jobs saved, keep-alive and ``TcpNoDelay`` on its HTTP server, and
``TCP_NODELAY=1`` in its environment so that DCMTK (which Debian's Orthanc links
against) disables Nagle's algorithm on DICOM associations too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
from peers import loopback

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7"
STORESCU = "storescu"
#: DCMTK reads it when it opens a socket: 1 disables Nagle's algorithm.
NODELAY_ENV = {"TCP_NODELAY": "1"}


def available() -> bool:
    """Whether Orthanc, its DICOMweb plugin and ``storescu`` are installed (the
    benchmark checks; the tests need them, and the test set-up installs them)."""
    return (Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()
            and shutil.which(STORESCU) is not None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its REST base, its DICOMweb base, its DICOM port and AE title."""

    http_url: str
    dicomweb_url: str
    dicom_port: int
    aet: str
    process: subprocess.Popen
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "orthanc.log"

    def upload(self, dicom: Path | bytes, client: httpx.Client | None = None) -> dict:
        """``POST /instances`` one Part 10 file (Orthanc's native REST upload);
        returns Orthanc's answer (``ID``, ``Status``: ``Success`` or ``AlreadyStored``)."""
        body = dicom.read_bytes() if isinstance(dicom, Path) else dicom
        post = client.post if client is not None else httpx.post
        r = post(f"{self.http_url}/instances", content=body,
                 headers={"Content-Type": "application/dicom"}, timeout=60)
        r.raise_for_status()
        return r.json()

    def upload_all(self, files: Iterable[Path]) -> list[dict]:
        """Upload every file over one keep-alive connection."""
        with httpx.Client(timeout=60) as client:
            return [self.upload(f, client) for f in files]

    def statistics(self) -> dict[str, Any]:
        r = httpx.get(f"{self.http_url}/statistics", timeout=30)
        r.raise_for_status()
        return r.json()

    def count_instances(self) -> int:
        return int(self.statistics()["CountInstances"])

    def wait_instances(self, count: int, timeout: float = 120.0) -> None:
        """Wait until Orthanc holds at least ``count`` instances."""
        deadline = time.monotonic() + timeout
        while self.count_instances() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Orthanc holds {self.count_instances()} of {count} "
                                   f"instances after {timeout:.0f} s")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.process.poll() is None


def orthanc_config(folder: Path, *, http_port: int, dicom_port: int, aet: str,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The configuration of a test Orthanc whose storage and index live in ``folder``."""
    config: dict[str, Any] = {
        "Name": "hie-test-orthanc",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        # No bind-address option in 1.10: only local clients are let in.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpDescribeErrors": True,
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpThreadsCount": 50,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": True,
        # What a region writing Chinese names configures: the encoding of C-FIND and
        # QIDO-RS answers (Orthanc's default, Latin1, turns 王^秀英 into "^").
        "DefaultEncoding": "Utf8",
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "DicomThreadsCount": 4,
        # the largest PDU DCMTK allows (Orthanc's default is 16 KB), as storescu sends
        "MaximumPduLength": 131072,
        "UnknownSopClassAccepted": True,
        "LuaScripts": [],
        "ExecuteLuaEnabled": False,
        "SaveJobs": False,
        "OverwriteInstances": False,
        "StableAge": 60,
        "MetricsEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Host": f"127.0.0.1:{http_port}",
            "Ssl": False,
        },
    }
    config.update(extra or {})
    return config


@contextlib.contextmanager
def start_orthanc(folder: Path, *, aet: str = "ORTHANC", timeout: float = 60.0,
                  config: Mapping[str, Any] | None = None) -> Iterator[Orthanc]:
    """Write ``folder/orthanc.json`` (storage and index in ``folder``, free HTTP and
    DICOM ports, DICOMweb at ``/dicom-web/``), start Orthanc with ``TCP_NODELAY=1``,
    wait until ``GET /system`` answers, yield it, and stop it at the end.

    ``config`` overrides or adds top-level options."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    conf_file = folder / "orthanc.json"
    conf_file.write_text(json.dumps(orthanc_config(folder, http_port=http_port,
                                                   dicom_port=dicom_port, aet=aet,
                                                   extra=config), indent=2))
    http_url = f"http://127.0.0.1:{http_port}"
    log = (folder / "orthanc.log").open("ab")
    proc = subprocess.Popen([ORTHANC, str(conf_file)], cwd=folder,
                            env=os.environ | NODELAY_ENV | loopback.env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    orthanc = Orthanc(http_url, f"{http_url}/dicom-web", dicom_port, aet, proc, folder)
    try:
        _wait_ready(orthanc, timeout)
        yield orthanc
    finally:
        _stop(proc)


def _wait_ready(orthanc: Orthanc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if orthanc.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {orthanc.process.returncode}:\n"
                               f"{orthanc.log.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{orthanc.http_url}/system", timeout=1).status_code == 200:
                # the DICOMweb plugin's routes are registered before the HTTP server
                # starts, but check it loaded at all
                plugins = httpx.get(f"{orthanc.http_url}/plugins", timeout=5).json()
                if "dicom-web" not in plugins:
                    raise RuntimeError(f"Orthanc's DICOMweb plugin is not loaded: {plugins}")
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s:\n"
                               f"{orthanc.log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- storescu ----------------------------------------------------------------------------


def presentation_contexts(files: Iterable[Path]) -> list[tuple[str, str]]:
    """The (SOP Class UID, Transfer Syntax UID) pairs of ``files``, in first-seen order."""
    pairs: dict[tuple[str, str], None] = {}
    for f in files:
        meta = pydicom.filereader.read_file_meta_info(f)
        pairs[(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))] = None
    return list(pairs)


def association_profile(files: Iterable[Path], cfg: Path, profile: str = "Folder") -> str:
    """Write a DCMTK association negotiation profile (``storescu -xf cfg profile``)
    proposing exactly one presentation context per (SOP class, transfer syntax) of
    ``files``, so that each file goes in its own transfer syntax, with no
    conversion and no context nobody needs. Returns the profile name.

    An association has at most 128 presentation contexts; more pairs than that is
    an error here rather than a silent fallback."""
    pairs = presentation_contexts(files)
    if len(pairs) > 128:
        raise ValueError(f"{len(pairs)} (SOP class, transfer syntax) pairs: more than the "
                         "128 presentation contexts of one association")
    syntaxes = sorted({ts for _, ts in pairs})
    ts_name = {ts: f"TS{i}" for i, ts in enumerate(syntaxes, 1)}
    lines = ["[[TransferSyntaxes]]"]
    for ts in syntaxes:
        lines += [f"[{ts_name[ts]}]", f"TransferSyntax1 = {ts}"]
    lines += ["", "[[PresentationContexts]]", f"[{profile}]"]
    lines += [f"PresentationContext{i} = {sop}\\{ts_name[ts]}"
              for i, (sop, ts) in enumerate(pairs, 1)]
    lines += ["", "[[Profiles]]", f"[{profile}]", f"PresentationContexts = {profile}", ""]
    cfg.write_text("\n".join(lines))
    return profile


def storescu_command(files: Iterable[Path], *, port: int, called_aet: str, workdir: Path,
                     host: str = "127.0.0.1", calling_aet: str = "HIESCU",
                     max_pdu: int = 131072) -> list[str]:
    """The ``storescu`` command sending ``files`` to the C-STORE SCP at ``host:port``
    in one association: an association profile for exactly the files' SOP classes
    and transfer syntaxes (``workdir/storescu.cfg``), the largest PDU DCMTK allows,
    and the files through ``+sd`` on a folder of symbolic links in ``workdir`` so
    that thousands of them fit on no command line. Run it with :data:`NODELAY_ENV`
    (:func:`run_storescu`)."""
    files = list(files)
    workdir.mkdir(parents=True, exist_ok=True)
    links = workdir / "send"
    if links.exists():
        shutil.rmtree(links)
    links.mkdir()
    for i, f in enumerate(files):
        (links / f"{i:07d}.dcm").symlink_to(f.resolve())
    cfg = workdir / "storescu.cfg"
    profile = association_profile(files, cfg)
    return [STORESCU, "-aet", calling_aet, "-aec", called_aet, "-xf", str(cfg), profile,
            "-pdu", str(max_pdu), "--max-send-pdu", str(max_pdu), "+sd", "+r",
            host, str(port), str(links)]


def run_storescu(cmd: list[str], *, timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Run a :func:`storescu_command` with ``TCP_NODELAY=1``; raise if any store
    fails (``storescu`` halts at the first failure)."""
    done = subprocess.run(cmd, env=os.environ | NODELAY_ENV, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        # its errors (E:, F:) rather than the warnings about the files (W:)
        lines = [ln for ln in (done.stdout + done.stderr).splitlines()
                 if not ln.startswith("W:")]
        raise RuntimeError(f"storescu failed ({done.returncode}): {' '.join(cmd)}\n"
                           + "\n".join(lines[-40:]))
    return done


def storescu(files: Iterable[Path], *, port: int, called_aet: str, workdir: Path,
             host: str = "127.0.0.1", calling_aet: str = "HIESCU",
             timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Send ``files`` to the C-STORE SCP at ``host:port`` in one association
    (:func:`storescu_command`, :func:`run_storescu`)."""
    return run_storescu(storescu_command(files, port=port, called_aet=called_aet,
                                         workdir=workdir, host=host,
                                         calling_aet=calling_aet), timeout=timeout)
