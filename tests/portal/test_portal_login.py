"""Logging in to the portal: cookies, CSRF on the login form, rate limits,
session expiry and logout — as a user and as an attacker would try them."""

from __future__ import annotations

import httpx
import pytest
from portalkit import (
    Clock,
    FakePortalData,
    client_for,
    csrf_of,
    logged_in,
    login,
    portal_app,
)

from consent.portal import PortalConfig


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def data() -> FakePortalData:
    return FakePortalData()


@pytest.fixture
def config(clock: Clock) -> PortalConfig:
    return PortalConfig(clock=clock, session_idle=1800, session_max=8 * 3600)


@pytest.fixture
async def client(data: FakePortalData, config: PortalConfig):
    async with client_for(portal_app(data, config)) as c:
        yield c


async def test_login_page_is_chinese_by_default_and_accessible(client: httpx.AsyncClient):
    page = await client.get("/portal/login")
    assert page.status_code == 200
    html = page.text
    assert '<html lang="zh-CN">' in html
    assert '<a class="skip" href="#main">跳到主要内容</a>' in html
    assert '<main id="main"' in html
    assert '<label for="username">用户名</label>' in html and 'id="username"' in html
    assert '<label for="password">密码</label>' in html and 'id="password"' in html
    assert 'lang="en"' in html  # the English switch is marked as English


async def test_english_switch_sets_a_cookie_and_returns_to_the_page(client: httpx.AsyncClient):
    r = await client.get("/portal/lang/en", params={"next": "/portal/login"})
    assert r.status_code == 303 and r.headers["location"] == "/portal/login"
    page = await client.get("/portal/login")
    assert '<html lang="en">' in page.text and "Username" in page.text
    # an open redirect is refused
    r = await client.get("/portal/lang/zh", params={"next": "https://evil.example/"})
    assert r.headers["location"] == "/portal/records"


async def test_login_sets_a_secure_session_cookie(client: httpx.AsyncClient):
    r = await login(client)
    assert r.status_code == 303 and r.headers["location"] == "/portal/records"
    cookie = next(h for h in r.headers.get_list("set-cookie")
                  if h.startswith("portal_session="))
    attrs = cookie.lower()
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/portal" in attrs
    assert "secure" not in attrs  # plain http test server
    assert len(cookie.split(";")[0].split("=", 1)[1]) >= 40  # a random id, not data
    assert "王秀英" in (await client.get("/portal/records")).text


async def test_cookie_is_secure_when_the_base_url_is_https(data: FakePortalData, clock: Clock):
    config = PortalConfig(clock=clock, base_url="https://hie.example.org")
    async with client_for(portal_app(data, config), base="https://testserver") as c:
        r = await login(c)
        cookie = next(h for h in r.headers.get_list("set-cookie")
                      if h.startswith("portal_session="))
        assert "secure" in cookie.lower()


async def test_wrong_password_is_refused_without_saying_which_part(client: httpx.AsyncClient):
    wrong_pw = await login(client, "wang", "nope")
    no_user = await login(client, "nobody", "nope")
    assert wrong_pw.status_code == no_user.status_code == 401
    assert "用户名或密码不正确" in wrong_pw.text and "用户名或密码不正确" in no_user.text
    assert "portal_session" not in wrong_pw.headers.get("set-cookie", "")
    assert (await client.get("/portal/records")).status_code == 303


async def test_login_without_the_csrf_token_is_refused(client: httpx.AsyncClient,
                                                       data: FakePortalData):
    await client.get("/portal/login")  # has the cookie, but the form leaves out the token
    r = await client.post("/portal/login", data={"username": "wang",
                                                 "password": "correct horse 1"})
    assert r.status_code == 403
    forged = await client.post("/portal/login", data={
        "username": "wang", "password": "correct horse 1", "csrf": "forged"})
    assert forged.status_code == 403
    assert data.logins == 0  # the password was never even checked


async def test_five_failures_lock_the_username(client: httpx.AsyncClient, data: FakePortalData,
                                               clock: Clock, config: PortalConfig):
    for _ in range(5):
        assert (await login(client, "wang", "guess")).status_code == 401
    # locked: even the right password, and from another address
    async with client_for(client._transport.app, address="10.0.0.9") as other:  # type: ignore[attr-defined]
        locked = await login(other, "wang", "correct horse 1")
    assert locked.status_code == 429
    assert "登录失败次数过多" in locked.text and "15 分钟" in locked.text
    assert int(locked.headers["retry-after"]) <= 15 * 60
    checked = data.logins
    assert (await login(client, "wang", "correct horse 1")).status_code == 429
    assert data.logins == checked  # no password check while locked
    clock.advance(15 * 60)
    assert (await login(client, "wang", "correct horse 1")).status_code == 303


async def test_five_failures_lock_the_client_address(client: httpx.AsyncClient, clock: Clock):
    for name in ("a1", "a2", "a3", "a4", "a5"):  # spraying usernames from one address
        assert (await login(client, name, "guess")).status_code == 401
    assert (await login(client, "wang", "correct horse 1")).status_code == 429
    # another address is not affected
    async with client_for(client._transport.app, address="10.0.0.8") as other:  # type: ignore[attr-defined]
        assert (await login(other, "wang", "correct horse 1")).status_code == 303


async def test_a_success_does_not_reset_the_address_count(client: httpx.AsyncClient):
    for name in ("a1", "a2", "a3", "a4"):
        await login(client, name, "guess")
    assert (await login(client, "zhang", "battery staple")).status_code == 303
    await login(client, "a5", "guess")
    assert (await login(client, "wang", "correct horse 1")).status_code == 429


async def test_an_idle_session_expires(client: httpx.AsyncClient, clock: Clock):
    await logged_in(client)
    clock.advance(29 * 60)
    assert (await client.get("/portal/records")).status_code == 200  # and touched
    clock.advance(29 * 60)
    assert (await client.get("/portal/records")).status_code == 200
    clock.advance(30 * 60)
    r = await client.get("/portal/records")
    assert r.status_code == 303 and r.headers["location"] == "/portal/login?expired=1"
    page = await client.get("/portal/login?expired=1")
    assert "会话已过期" in page.text


async def test_a_session_ends_after_its_maximum_age_even_when_used(client: httpx.AsyncClient,
                                                                   clock: Clock):
    await logged_in(client)
    for _ in range(16):  # every 29 minutes for 7.7 hours
        clock.advance(29 * 60)
        assert (await client.get("/portal/records")).status_code == 200
    clock.advance(29 * 60)
    assert (await client.get("/portal/records")).status_code == 303


async def test_logout_ends_the_session_on_the_server(client: httpx.AsyncClient):
    csrf = await logged_in(client)
    stolen = client.cookies.get("portal_session")
    assert (await client.post("/portal/logout", data={})).status_code == 403  # no token
    r = await client.post("/portal/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/portal/login?bye=1"
    client.cookies.set("portal_session", stolen, path="/portal")
    assert (await client.get("/portal/records")).status_code == 303


async def test_login_issues_a_new_session_id(client: httpx.AsyncClient):
    await logged_in(client)
    first = client.cookies.get("portal_session")
    await login(client)
    assert client.cookies.get("portal_session") != first


async def test_pages_need_a_login(client: httpx.AsyncClient):
    for path in ("/portal/records", "/portal/consents", "/portal/consultations",
                 "/portal/access", "/portal/preview", "/portal/export"):
        r = await client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/portal/login", path
    r = await client.post("/portal/consents", data={"grantee": "org:h2"})
    assert r.status_code == 303


async def test_responses_carry_security_headers(client: httpx.AsyncClient):
    await logged_in(client)
    r = await client.get("/portal/records")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert csrf_of(r.text)
