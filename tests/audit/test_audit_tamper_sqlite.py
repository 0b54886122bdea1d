"""Tampering with the SQLite file behind the exchange's back, and ``hie audit
verify`` finding it.

The edits go straight to the tables of ``hie/store/sqlite/schema.py``:
``versions`` holds every body, ``resources`` the current version of each
resource (its ``vid`` points into ``versions``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import typer
from audit_records import read_record
from typer.testing import CliRunner

from hie.audit.chain import append, event_id
from hie.audit.cli import app as audit_app
from hie.audit.fhir import AUDIT_TYPE
from hie.audit.verify import VerifyResult, verify
from hie.store import open_store

runner = CliRunner()
# mounted the way hie/cli.py mounts it, so the test types what an operator types
hie_cli = typer.Typer()
hie_cli.add_typer(audit_app, name="audit")


async def _fill(path: Path, n: int) -> None:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        for i in range(n):  # one transaction each: like reads audited one by one
            await append(store, [read_record(i)])
    finally:
        await store.close()


async def _verify(path: Path) -> VerifyResult:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        return await verify(store)
    finally:
        await store.close()


def _body(conn: sqlite3.Connection, seq: int) -> tuple[int, bytes]:
    vid, body = conn.execute(
        "SELECT v.vid, v.body FROM resources r JOIN versions v ON v.vid = r.vid "
        "WHERE r.type = ? AND r.id = ?", (AUDIT_TYPE, event_id(seq))).fetchone()
    return vid, bytes(body)


def _edit(path: Path, sql_fn: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        sql_fn(conn)  # type: ignore[operator]
        conn.execute("COMMIT")
    finally:
        conn.close()


def _verify_cli(path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(hie_cli, ["audit", "verify", "--store-url", f"sqlite:///{path}", *args])
    return result.exit_code, result.output


def test_intact_chain_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 5))
    code, out = _verify_cli(db)
    assert code == 0, out
    assert "intact: 5 records" in out
    code, out = _verify_cli(db, "--json")
    assert code == 0 and orjson.loads(out)["count"] == 5


def test_one_changed_body_byte_is_found_and_printed(tmp_path: Path) -> None:
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 6))

    def flip(conn: sqlite3.Connection) -> None:
        vid, body = _body(conn, 4)
        # the practitioner "doc-1" becomes "doc-2": one byte, still valid JSON
        at = body.index(b"Practitioner/doc-1") + len(b"Practitioner/doc-")
        changed = body[:at] + b"2" + body[at + 1:]
        conn.execute("UPDATE versions SET body = ? WHERE vid = ?", (changed, vid))

    _edit(db, flip)
    result = asyncio.run(_verify(db))
    assert (result.intact, result.problem, result.sequence, result.count) == (
        False, "changed", 4, 3)
    code, out = _verify_cli(db)
    assert code == 1
    assert f"record 4 (AuditEvent/{event_id(4)})" in out and "changed" in out
    assert "Practitioner/doc-2" in out  # the record as it now stands is printed


def test_a_byte_that_breaks_the_json_is_a_change(tmp_path: Path) -> None:
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 3))

    def corrupt(conn: sqlite3.Connection) -> None:
        vid, body = _body(conn, 2)
        conn.execute("UPDATE versions SET body = ? WHERE vid = ?", (b"#" + body[1:], vid))

    _edit(db, corrupt)
    result = asyncio.run(_verify(db))
    assert (result.problem, result.sequence) == ("changed", 2)


def test_a_deleted_row_is_found_as_removed(tmp_path: Path) -> None:
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 6))

    def delete(conn: sqlite3.Connection) -> None:
        vid, _ = _body(conn, 3)
        conn.execute("DELETE FROM versions WHERE vid = ?", (vid,))
        conn.execute("DELETE FROM resources WHERE type = ? AND id = ?",
                     (AUDIT_TYPE, event_id(3)))

    _edit(db, delete)
    result = asyncio.run(_verify(db))
    assert (result.intact, result.problem, result.sequence, result.count) == (
        False, "removed", 3, 2)
    code, out = _verify_cli(db)
    assert code == 1 and "removed" in out and event_id(3) in out


def test_a_removed_record_with_its_successors_renumbered_is_found(tmp_path: Path) -> None:
    # a careful forger deletes record 3 and moves 4 → 3, 5 → 4 (ids and bodies)
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 5))

    def renumber(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM versions WHERE type = ? AND id = ?", (AUDIT_TYPE, event_id(3)))
        conn.execute("DELETE FROM resources WHERE type = ? AND id = ?",
                     (AUDIT_TYPE, event_id(3)))
        for old in (4, 5):
            for table in ("versions", "resources"):
                conn.execute(f"UPDATE {table} SET id = ? WHERE type = ? AND id = ?",
                             (event_id(old - 1), AUDIT_TYPE, event_id(old)))

    _edit(db, renumber)
    result = asyncio.run(_verify(db))
    assert (result.intact, result.sequence) == (False, 3)
    assert result.problem == "changed" and "moved" in result.message


def test_swapped_records_are_found(tmp_path: Path) -> None:
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 5))

    def swap(conn: sqlite3.Connection) -> None:
        vid2, body2 = _body(conn, 2)
        vid3, body3 = _body(conn, 3)
        conn.execute("UPDATE versions SET body = ? WHERE vid = ?", (body3, vid2))
        conn.execute("UPDATE versions SET body = ? WHERE vid = ?", (body2, vid3))

    _edit(db, swap)
    result = asyncio.run(_verify(db))
    assert (result.intact, result.problem, result.sequence) == (False, "changed", 2)
    code, _ = _verify_cli(db)
    assert code == 1


def test_a_truncated_tail_is_found_against_the_head(tmp_path: Path) -> None:
    db = tmp_path / "hie.db"
    asyncio.run(_fill(db, 4))

    def cut(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM resources WHERE type = ? AND id = ?",
                     (AUDIT_TYPE, event_id(4)))

    _edit(db, cut)
    result = asyncio.run(_verify(db))
    assert (result.problem, result.sequence) == ("removed", 4)
