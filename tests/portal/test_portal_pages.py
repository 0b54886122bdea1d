"""The portal's pages over an in-memory ``PortalData`` and the real consent
service: what a patient sees, and that what they grant or withdraw changes
what the decision service answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from portalkit import (
    NAMES,
    OTHER_PERSON,
    PERSON,
    FakePortalData,
    add_consultation,
    client_for,
    csrf_of,
    logged_in,
    portal_app,
)

import consent.portal
from consent import service
from consent.portal import AccessEntry, PortalConfig
from consent.portal.i18n import EN, ZH
from schemas.consent import DecisionRequest, DecisionResponse


@pytest.fixture
def data() -> FakePortalData:
    return FakePortalData()


@pytest.fixture
async def client(data: FakePortalData):
    async with client_for(portal_app(data, PortalConfig(page_size=2))) as c:
        yield c


async def decide(data: FakePortalData, org: str, person: str = PERSON) -> DecisionResponse:
    return await service.decide(data.consents, DecisionRequest(
        organization=org, practitioner=None, purpose="TREAT", person=person),
        now=datetime.now(UTC), break_glass_hours=4, organizations=sorted(NAMES))


def test_both_languages_have_every_message():
    assert set(ZH) == set(EN)
    assert all(ZH.values()) and all(EN.values())


async def test_records_are_grouped_by_hospital_and_date(client: httpx.AsyncClient):
    await logged_in(client)
    html = (await client.get("/portal/records")).text
    first, second = html.index("市中医院"), html.index("市第一人民医院")
    assert first < second  # hospitals by name
    tcm = html[first:second]
    assert "2026-05-14" in tcm and "Type 2 diabetes mellitus (E11.9)" in tcm
    assert "Moderate depressive episode" in tcm  # the patient sees their own sensitive records
    assert "敏感类别：精神心理" in tcm
    assert "Essential hypertension" in html[second:]
    assert "Asthma" not in html  # another person's record


async def test_grant_then_withdraw_changes_the_decision(client: httpx.AsyncClient,
                                                        data: FakePortalData):
    csrf = await logged_in(client)
    assert not (await decide(data, "h3")).permit  # default deny
    r = await client.post("/portal/consents", data={
        "csrf": csrf, "grantee": "org:h3", "purpose": "TREAT", "end": "2027-01-01"})
    assert r.status_code == 303 and r.headers["location"] == "/portal/consents"
    after = await decide(data, "h3")
    assert after.permit and after.all_organizations and "PSY" in after.hidden_labels
    assert not (await decide(data, "h2")).permit  # only the hospital named
    page = (await client.get("/portal/consents")).text
    assert "授权已生效" in page and "省人民医院" in page and "至 2027-01-01" in page
    assert "无（敏感记录保持隐藏）" in page

    consent_id = (await service.list_consents(data.consents, person=PERSON))[0]["id"]
    confirm = await client.get(f"/portal/consents/{consent_id}/withdraw")
    assert confirm.status_code == 200 and "确认撤回" in confirm.text
    r = await client.post(f"/portal/consents/{consent_id}/withdraw",
                          data={"csrf": csrf_of(confirm.text)})
    assert r.status_code == 303
    assert not (await decide(data, "h3")).permit  # at once
    page = (await client.get("/portal/consents")).text
    assert "授权已撤回" in page and "已撤回" in page


async def test_opening_a_category_and_granting_a_doctor(client: httpx.AsyncClient,
                                                        data: FakePortalData):
    csrf = await logged_in(client)
    r = await client.post("/portal/consents", data={
        "csrf": csrf, "grantee": "doc:h2-dr-chen", "purpose": ["TREAT"],
        "category": ["PSY"], "start": "2026-01-01", "end": "2030-12-31"})
    assert r.status_code == 303
    doctor = await service.decide(data.consents, DecisionRequest(
        organization="h2", practitioner="h2-dr-chen", purpose="TREAT", person=PERSON),
        now=datetime.now(UTC), break_glass_hours=4, organizations=sorted(NAMES))
    assert doctor.permit and "PSY" not in doctor.hidden_labels
    assert not (await decide(data, "h2")).permit  # the doctor, not the whole hospital
    preview = (await client.get("/portal/preview")).text
    assert "单独授权的医生" in preview and "陈伟（市中医院）" in preview


async def test_grant_form_errors_are_explained(client: httpx.AsyncClient,
                                               data: FakePortalData):
    csrf = await logged_in(client)
    r = await client.post("/portal/consents", data={"csrf": csrf, "grantee": "org:nowhere",
                                                    "start": "2027-02-01", "end": "2027-01-01"})
    assert r.status_code == 400
    assert "请选择要授权的医院或医生" in r.text and "请至少选择一种用途" in r.text
    assert "结束日期不能早于开始日期" in r.text and 'role="alert"' in r.text
    bad_date = await client.post("/portal/consents", data={
        "csrf": csrf, "grantee": "org:h2", "purpose": "TREAT", "end": "tomorrow"})
    assert bad_date.status_code == 400 and "日期格式不正确" in bad_date.text
    assert await service.list_consents(data.consents, person=PERSON) == []


async def test_posts_without_the_csrf_token_change_nothing(client: httpx.AsyncClient,
                                                           data: FakePortalData):
    csrf = await logged_in(client)
    await client.post("/portal/consents", data={"csrf": csrf, "grantee": "org:h3",
                                                "purpose": "TREAT"})
    consent_id = (await service.list_consents(data.consents, person=PERSON))[0]["id"]
    await add_consultation(data)
    for path, form in (("/portal/consents", {"grantee": "org:h2", "purpose": "TREAT"}),
                       (f"/portal/consents/{consent_id}/withdraw", {}),
                       ("/portal/consultations/cons-1/approve", {}),
                       ("/portal/consultations/cons-1/decline", {"csrf": "guessed"})):
        r = await client.post(path, data=form)
        assert r.status_code == 403, path
        assert "请求无法验证" in r.text
    assert len(await service.list_consents(data.consents, person=PERSON)) == 1
    assert (await decide(data, "h3")).permit
    assert not (await data.consents.consultation("cons-1")).approved


async def test_a_patient_cannot_touch_another_persons_consent(client: httpx.AsyncClient,
                                                              data: FakePortalData):
    theirs = await service.grant_consent(data.consents, person=OTHER_PERSON,
                                         organization="h1", purposes=["TREAT"])
    csrf = await logged_in(client)
    r = await client.get(f"/portal/consents/{theirs['id']}/withdraw")
    assert r.status_code == 303
    r = await client.post(f"/portal/consents/{theirs['id']}/withdraw", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await decide(data, "h1", OTHER_PERSON)).permit
    assert "找不到该授权" in (await client.get("/portal/consents")).text


async def test_approve_and_decline_consultations(client: httpx.AsyncClient,
                                                 data: FakePortalData):
    await add_consultation(data, "cons-1")
    await add_consultation(data, "cons-2")
    await add_consultation(data, "theirs", person=OTHER_PERSON)
    csrf = await logged_in(client)
    page = (await client.get("/portal/consultations")).text
    assert "心内科远程会诊" in page and "吴强" in page and "待处理" in page
    assert "theirs" not in page
    assert (await client.post("/portal/consultations/cons-1/approve",
                              data={"csrf": csrf})).status_code == 303
    assert (await data.consents.consultation("cons-1")).approved
    await client.post("/portal/consultations/cons-2/decline", data={"csrf": csrf})
    assert (await data.consents.consultation("cons-2")).status == "declined"
    await client.post("/portal/consultations/theirs/approve", data={"csrf": csrf})
    assert not (await data.consents.consultation("theirs")).approved
    page = (await client.get("/portal/consultations")).text
    assert "已同意（线上）" in page and "您已拒绝" in page and "操作未完成" in page


async def test_access_log_highlights_break_the_glass_in_words(client: httpx.AsyncClient,
                                                              data: FakePortalData):
    data.log = [
        AccessEntry(when="2026-06-01T02:00:00Z", organization="h3", practitioner="h3-dr-wu",
                    purpose="ETREAT", what="Condition", outcome="permit",
                    break_the_glass=True, reason="车祸昏迷", count=3),
        AccessEntry(when="2026-05-30T01:00:00Z", organization="h2", practitioner=None,
                    purpose="TREAT", what="Patient/pat-h2", outcome="deny"),
        AccessEntry(when="2026-05-01T01:00:00Z", organization="h1",
                    practitioner="h1-dr-li", purpose="TREAT", what="Observation",
                    outcome="permit")]
    await logged_in(client)
    html = (await client.get("/portal/access")).text
    row = html[html.index('<tr class="btg">'):]
    row = row[:row.index("</tr>")]
    assert "紧急授权（破窗）" in row and "理由：车祸昏迷" in row and "吴强" in row
    assert "2026-06-01 10:00" in row  # local time (UTC+8)
    assert "省人民医院" in row and "3 条结果" in row
    assert "医院系统" in html and "已拒绝" in html
    assert "h1-dr-li" not in html  # page size 2: on the next page
    older = await client.get("/portal/access", params={"cursor": "2"})
    assert "h1-dr-li" in older.text and "回到最新" in older.text


async def test_preview_shows_what_each_hospital_sees(client: httpx.AsyncClient,
                                                     data: FakePortalData):
    await service.grant_consent(data.consents, person=PERSON, organization="h3",
                                purposes=["TREAT"])
    await logged_in(client)
    client.cookies.set("portal_lang", "en", path="/portal")
    html = (await client.get("/portal/preview")).text
    h3 = html[html.index("省人民医院"):]
    h3 = h3[:h3.index("</section>")]
    assert "every hospital" in h3 and "mental health" in h3 and "resident ID number" in h3
    assert "Your consent allows it" in h3
    h1 = html[html.index("市第一人民医院"):]
    assert "none of other hospitals" in h1[:h1.index("</section>")]


async def test_export_is_a_fhir_bundle_attachment(client: httpx.AsyncClient):
    await logged_in(client)
    r = await client.get("/portal/export")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    bundle = r.json()
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 5


def test_every_message_the_templates_use_exists():
    folder = Path(consent.portal.__file__).parent
    used: set[str] = set()
    for path in [*folder.glob("templates/*.html"), *folder.glob("*.py")]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.$-]+)["']""", path.read_text()))
    prefixes = {key for key in used if key.endswith(".")}  # completed at run time
    assert used - prefixes and used - prefixes <= set(ZH), sorted(used - prefixes - set(ZH))
    assert all(any(k.startswith(p) for k in ZH) for p in prefixes)
