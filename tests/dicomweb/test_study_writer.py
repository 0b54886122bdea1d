"""The FHIR face of stored studies: one ImagingStudy version for many STOW-RS
requests, written from the study's records, also after a restart."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from dicomkit import instance, multipart, part10, stow
from fastapi import FastAPI
from pydicom.uid import generate_uid

from hie.app import create_app
from hie.audit.service import search_events
from hie.config import Settings
from hie.context import RequestContext
from hie.dicomweb import stow as stow_service
from hie.dicomweb.bodies import read_body
from hie.dicomweb.studies import write_pending
from hie.store import open_store


async def _study(client: httpx.AsyncClient, uid: str) -> list[dict]:
    r = await client.get("/fhir/ImagingStudy", params={"identifier":
                                                       f"urn:dicom:uid|urn:oid:{uid}"})
    return [e["resource"] for e in r.json().get("entry", [])]


async def test_many_single_instance_requests_make_one_version(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.study_writer.quiet = app.state.study_writer.max_wait = 60  # the test flushes
    uid, series = generate_uid(), generate_uid()
    sent = [instance(study=uid, series=series, number=n) for n in range(1, 11)]
    for ds in sent:
        assert (await stow(client, [ds])).status_code == 200
    assert await app.state.study_writer.flush() == 1
    [img] = await _study(client, uid)
    assert img["meta"]["versionId"] == "1"
    assert img["numberOfInstances"] == 10
    assert [i["number"] for i in img["series"][0]["instance"]] == list(range(1, 11))
    # each request's write was audited under the patient it belongs to
    await app.state.audit_log.flush()
    events, _ = await search_events(app.state.store,
                                    patient_refs=[img["subject"]["reference"]], limit=100)
    writes = [e for e in (orjson.loads(r.body) for r in events)
              if any("DicomStudy" in (o.get("what", {}).get("reference") or "")
                     for o in e.get("entity", []))]
    assert len(writes) == 10


async def test_a_study_marked_before_a_restart_is_written_at_the_next_start(
        settings: Settings) -> None:
    uid = generate_uid()
    # a process stores a study and dies before its writer ran: only the mark is left
    store = open_store(settings.store_url)
    await store.open()
    try:
        body, ctype = multipart([part10(instance(study=uid))])
        parsed = [p for p in read_body(body, ctype) if isinstance(p, stow_service.Incoming)]
        assert await stow_service.store_instances(
            store, RequestContext(organization="local"), parsed,
            patient_id_system="urn:hie:hospital:mrn", hooks=[])
    finally:
        await store.close()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        token, _, _ = app.state.tokens.issue(client_id="local-system", organization="local",
                                             scope="system/*.cruds")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver",
                                     headers={"Authorization": f"Bearer {token}"}) as c:
            for _ in range(50):  # the writer's first pass, at start
                if await _study(c, uid):
                    break
                await asyncio.sleep(0.1)
            [img] = await _study(c, uid)
            assert img["numberOfInstances"] == 1


async def test_a_study_still_arriving_waits_until_quiet_or_waited_long_enough(
        app: FastAPI, client: httpx.AsyncClient) -> None:
    writer = app.state.study_writer
    writer.quiet = writer.max_wait = 60  # the background task stays out of the way
    uid = generate_uid()
    assert (await stow(client, [instance(study=uid)])).status_code == 200
    hooks = app.state.write_hooks
    # received just now: not quiet yet, and not waiting for long
    assert await write_pending(app.state.store, hooks, quiet=60, max_wait=60) == (0, 1)
    assert await _study(client, uid) == []
    # waited long enough (here: any time at all) → written even while still arriving
    assert await write_pending(app.state.store, hooks, quiet=60, max_wait=0) == (1, 0)
    [img] = await _study(client, uid)
    assert img["numberOfInstances"] == 1
    assert await write_pending(app.state.store, hooks) == (0, 0)  # nothing left marked
