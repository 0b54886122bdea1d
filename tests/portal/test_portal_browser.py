"""The portal driven in headless Chromium (Debian's ``/usr/bin/chromium``, by
Playwright) against the exchange app served by uvicorn on 127.0.0.1: log in,
grant, withdraw, approve a consultation, read the access log — by keyboard
and by label, as assistive technology would. Screenshots go to
``test-artifacts/portal/``.

Playwright's own browser download is never used (``playwright install`` is
not run anywhere): CI installs ``chromium`` through ``scripts/setup test``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from portal_region import REASON, portal_exchange, seed_region, serving

from hie.config import Settings
from hie.store import open_store

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A seeded store served by uvicorn; yields the base URL and the credentials."""
    folder = tmp_path_factory.mktemp("portal")
    port = _free_port()
    settings = Settings(store_url=f"sqlite:///{folder}/hie.db",
                        base_url=f"http://127.0.0.1:{port}", var_dir=str(folder))

    async def seed_store() -> dict[str, Any]:
        store = open_store(settings.store_url)
        await store.open()
        try:
            return await seed_region(store, settings)
        finally:
            await store.close()

    # in a thread of its own: Playwright's sync API keeps an event loop in this one
    with ThreadPoolExecutor(1) as pool:
        creds = pool.submit(asyncio.run, seed_store()).result()
    with serving(portal_exchange(settings), port) as base:
        yield base, creds


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=ARGS, viewport={"width": 1200, "height": 900},
            locale="zh-CN")
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def page(browser: BrowserContext, region: tuple[str, dict[str, Any]]) -> Page:
    """One patient's tab, logged in with the keyboard only."""
    base, creds = region
    wang = creds["patients"][0]
    page = browser.new_page()
    page.goto(base + "/portal/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.keyboard.press("Tab")  # the first stop is the skip link
    expect(page.get_by_role("link", name="跳到主要内容")).to_be_focused()
    page.get_by_label("用户名").fill(wang["username"])
    page.get_by_label("密码").fill(wang["password"])
    page.get_by_label("密码").press("Enter")
    expect(page.get_by_role("heading", level=1, name="我的病历")).to_be_visible()
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_records_from_every_hospital(page: Page, region: tuple[str, dict[str, Any]]):
    expect(page.get_by_role("heading", level=2, name=re.compile("市第一人民医院"))).to_be_visible()
    expect(page.get_by_role("heading", level=2, name=re.compile("市中医院"))).to_be_visible()
    expect(page.get_by_text("Essential hypertension (I10)").first).to_be_visible()
    shot(page, "01-records")


def test_grant_then_withdraw(page: Page):
    page.get_by_role("navigation").get_by_role("link", name="我的授权").click()
    expect(page.get_by_text("您尚未授权任何医院或医生。")).to_be_visible()
    grantee = page.get_by_label("授权给（医院或医生）")
    grantee.select_option(label="省人民医院 Provincial People's Hospital")
    expect(page.get_by_label("诊疗（包括您参与的远程会诊）")).to_be_checked()
    page.get_by_label("结束日期（可选，含当天）").fill("2027-01-01")
    page.get_by_role("button", name="授权").click()
    expect(page.get_by_role("status")).to_have_text("授权已生效。")
    row = page.get_by_role("row", name=re.compile("省人民医院"))
    expect(row).to_contain_text("有效")
    expect(row).to_contain_text("至 2027-01-01")
    shot(page, "02-consent-granted")

    page.goto(page.url.replace("/consents", "/preview"))
    expect(page.get_by_role("region", name=re.compile("省人民医院"))).to_contain_text("全部医院")
    shot(page, "03-who-can-see-what")

    page.get_by_role("navigation").get_by_role("link", name="我的授权").click()
    page.get_by_role("link", name=re.compile("撤回对 省人民医院")).click()
    expect(page.get_by_role("heading", level=1, name="确认撤回授权")).to_be_visible()
    page.get_by_role("button", name="确认撤回").click()
    expect(page.get_by_role("status")).to_have_text("授权已撤回，立即生效。")
    expect(page.get_by_role("row", name=re.compile("省人民医院"))).to_contain_text("已撤回")
    shot(page, "04-consent-withdrawn")


def test_approve_a_consultation(page: Page):
    page.get_by_role("navigation").get_by_role("link", name="会诊申请").click()
    card = page.get_by_role("region", name=re.compile("市第一人民医院"))
    expect(card).to_contain_text("心内科远程会诊")
    card.get_by_role("button", name=re.compile("^同意")).click()
    expect(page.get_by_role("status")).to_have_text("您已同意该会诊。")
    expect(page.get_by_role("region", name=re.compile("市第一人民医院"))).to_contain_text(
        "已同意（线上）")
    shot(page, "05-consultation-approved")


def test_access_log_highlights_break_the_glass(page: Page):
    page.get_by_role("navigation").get_by_role("link", name="访问记录").click()
    table = page.get_by_role("table", name=re.compile("谁在何时"))
    btg = table.locator("tr.btg")
    expect(btg).to_have_count(1)
    expect(btg).to_contain_text("紧急授权（破窗）")
    expect(btg).to_contain_text(REASON)
    expect(btg).to_contain_text("吴强 Wu Qiang")
    expect(table).to_contain_text("陈伟 Chen Wei")
    shot(page, "06-access-log")

    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1, name="Access log")).to_be_visible()
    expect(page.locator("tr.btg")).to_contain_text("Emergency access (break-the-glass)")
    shot(page, "07-access-log-en")
    page.get_by_role("link", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
