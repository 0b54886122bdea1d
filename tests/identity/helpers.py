"""Helpers of the identity tests: valid resident ID numbers, Patients as hospitals
push them, and a pusher that writes a Patient and its link in one transaction
(as the write path does)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from hie.config import Settings
from hie.fhir.search.extract import extract
from hie.identity.model import LinkResult, stamp_now
from hie.identity.resident_id import check_char
from hie.identity.service import link_patient
from hie.store.base import Store, Transaction, WriteRecord

RID = "urn:oid:2.16.156.10011.1.1"


def make_rid(region: str = "110105", birth: str = "19800304", seq: str = "124") -> str:
    """A valid 18-character resident ID number."""
    first17 = region + birth + seq
    return first17 + check_char(first17)


def patient(*, rid: str | None = None, mrn: str | None = None, hospital: str = "a",
            name: str | None = "王秀英", pinyin: tuple[str, str] | None = None,
            birth: str | None = "1980-03-04", gender: str | None = "female",
            phone: str | None = "13812345678", address: str | None = "北京市朝阳区人民路1号",
            id: str | None = None) -> dict[str, Any]:
    """A Patient as a hospital pushes it."""
    ids = [{"system": f"http://{hospital}.example.cn/mrn",
            "value": mrn or uuid.uuid4().hex[:8]}]
    if rid is not None:
        ids.append({"system": RID, "value": rid})
    names = []
    if name:
        names.append({"use": "official", "text": name})
    if pinyin:
        names.append({"use": "usual", "family": pinyin[0], "given": [pinyin[1]]})
    out: dict[str, Any] = {"resourceType": "Patient", "id": id or str(uuid.uuid4()),
                           "identifier": ids, "name": names}
    if birth:
        out["birthDate"] = birth
    if gender:
        out["gender"] = gender
    if phone:
        out["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        out["address"] = [{"text": address}]
    return out


async def write_patient(tx: Transaction, p: dict[str, Any], source: str) -> None:
    current = await tx.read("Patient", p["id"])
    version = current.version + 1 if current else 1
    await tx.put(WriteRecord("Patient", p["id"], version, stamp_now(), orjson.dumps(p),
                             source=source, index=extract(p)))


class Pusher:
    """Pushes Patients as hospital ``source`` (Patient write + link, one transaction)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings

    async def __call__(self, p: dict[str, Any], source: str = "org-a") -> LinkResult:
        async def run(tx: Transaction) -> LinkResult:
            await write_patient(tx, p, source)
            return await link_patient(tx, patient=p, source=source, settings=self.settings)

        return await self.store.transact(run)
