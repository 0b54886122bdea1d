"""Keeping peers that cannot choose their listening address on the loopback.

Debian's Orthanc 1.10 has no option for the address it binds (its HTTP and DICOM
servers listen on every interface; ``HttpBindAddresses`` came in a later
release). The tests' rule is that every service listens on 127.0.0.1 only, so
such a peer runs with a tiny ``LD_PRELOAD`` library that turns a ``bind`` to
the wildcard address (0.0.0.0 or ::) into a ``bind`` to the loopback (127.0.0.1
or ::1). It is compiled with the machine's C compiler on first use and kept in a
cache folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real = 0;
    if (!real) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr) == 0) {
            a.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hie-tests"


def library() -> Path:
    """The compiled shim (built once per source version)."""
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    out = _cache() / f"loopback-bind-{digest}.so"
    if out.exists():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("a C compiler is needed to keep peers on the loopback")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "loopback.c"
        src.write_text(SOURCE)
        built = Path(tmp) / out.name
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(built), str(src), "-ldl"],
                       check=True, capture_output=True)
        os.replace(built, out)  # atomic: parallel test processes may race here
    return out


def env() -> dict[str, str]:
    """Environment variables that keep a child process's servers on the loopback."""
    return {"LD_PRELOAD": str(library())}


def listening(port: int) -> list[str]:
    """The local addresses listening on TCP ``port`` (from /proc/net/tcp{,6})."""
    found: list[str] = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path(f"/proc/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port and len(addr) == width:
                found.append(_address(addr))
    return found


def _address(hexaddr: str) -> str:
    if len(hexaddr) == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(hexaddr)))
    words = [bytes.fromhex(hexaddr[i:i + 8])[::-1] for i in range(0, 32, 8)]
    raw = b"".join(words)
    return ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2))
