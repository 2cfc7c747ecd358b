"""GraphiQL in a real browser (Debian's Chromium, driven by playwright), against a running gateway
over the demo systems, with every request to another origin recorded (the page must work offline):

the page loads with no console error; a token typed into the Headers pane; the README's customer-360
runs and shows a sales rep's masks; a subscription shows an event after a change in the sales system.
A screenshot of each state is kept in ``var/test-artifacts/``. Without Chromium this skips, except
under ``CG_REQUIRE_SERVICES=1`` (``make test`` installs it where it can).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from .conftest import customer_id
from .running import Live, patch, subscribed, token, until
from .test_real_clients import CUSTOMER_360

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SUBSCRIPTION = (
    "subscription($id: ID!) { customerChanged(id: $id) { kind customer { accountNo title phone } } }"
)


def _chromium() -> str:
    found = os.environ.get("CG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Chromium is not installed (apt-get install chromium; make test does it as root)"
    if os.environ.get("CG_REQUIRE_SERVICES") == "1":
        pytest.fail(f"CG_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


class Browser:
    def __init__(self, page: object, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.console_errors: list[str] = []
        self.foreign: list[str] = []


@pytest.fixture
async def browser(live: Live) -> AsyncIterator[Browser]:
    executable = _chromium()
    from playwright.async_api import async_playwright

    origin = live.ws_url.replace("ws:", "http:").rsplit("/", 1)[0]
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        context = await chromium.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        state = Browser(page, origin)
        page.on("console", lambda m: state.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: state.console_errors.append(str(e)))

        def record(request: object) -> None:
            url = request.url  # type: ignore[attr-defined]
            parts = urlsplit(url)
            if (
                parts.scheme in ("http", "https", "ws", "wss")
                and f"{parts.hostname}:{parts.port}" != urlsplit(origin).netloc
            ):
                state.foreign.append(url)

        page.on("request", record)
        page.on(
            "response",
            lambda r: state.console_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        try:
            yield state
        finally:
            await chromium.close()


async def _open(browser: Browser, query: str, variables: dict[str, str]) -> None:
    page = browser.page
    url = f"{browser.origin}/graphql?" + urlencode({"q": query, "variables": json.dumps(variables)})
    await page.goto(url)  # type: ignore[attr-defined]
    try:
        await page.wait_for_selector(".graphiql-execute-button", timeout=20_000)  # type: ignore[attr-defined]
    except Exception:
        await _shot(browser, "graphiql-failed-to-load.png")
        raise AssertionError(f"GraphiQL did not load: {browser.console_errors} {browser.foreign}") from None


async def _type_headers(browser: Browser, headers: dict[str, str]) -> None:
    page = browser.page
    await page.get_by_role("button", name="Headers").click()  # type: ignore[attr-defined]
    editor = page.locator(".graphiql-editor-tool .graphiql-editor").last  # type: ignore[attr-defined]
    await editor.click()
    await page.keyboard.press("Control+A")  # type: ignore[attr-defined]
    await page.keyboard.insert_text(json.dumps(headers))  # type: ignore[attr-defined]


async def _result(browser: Browser) -> str:
    text: str = await browser.page.locator(".result-window").inner_text()  # type: ignore[attr-defined]
    return text


async def _shot(browser: Browser, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await browser.page.screenshot(path=str(ARTIFACTS / name))  # type: ignore[attr-defined]


async def test_graphiql_runs_customer_360_and_a_subscription_offline(live: Live, browser: Browser) -> None:
    await until(lambda: live.gateway.live.bus.subscribers == 0)
    variables = {"id": customer_id(live.pool)}
    await _open(browser, CUSTOMER_360, variables)
    await _type_headers(browser, {"Authorization": f"Bearer {token(['sales_rep'], live.rep)}"})
    await browser.page.locator(".graphiql-execute-button").click()  # type: ignore[attr-defined]
    await browser.page.wait_for_function(  # type: ignore[attr-defined]
        "() => (document.querySelector('.result-window')?.innerText || '').includes('FORBIDDEN')",
        timeout=15_000,
    )
    shown = await _result(browser)
    await _shot(browser, "graphiql-customer-360.png")
    assert live.pool in shown
    assert "***@" in shown and "*******" in shown  # the rep's masks: e-mail and phone
    assert '"orders": null' in shown and "FORBIDDEN" in shown

    # The explorer plugin opens beside the editor.
    await browser.page.get_by_role("button", name="Show GraphiQL Explorer").click()  # type: ignore[attr-defined]
    await browser.page.get_by_text("Explorer", exact=True).first.wait_for(timeout=5_000)  # type: ignore[attr-defined]
    await _shot(browser, "graphiql-explorer.png")

    # The demo's subscription recipe, typed over the query, with the same token.
    editor = browser.page.locator(".graphiql-query-editor .CodeMirror")  # type: ignore[attr-defined]
    await editor.click()
    await browser.page.keyboard.press("Control+A")  # type: ignore[attr-defined]
    await browser.page.keyboard.insert_text(SUBSCRIPTION)  # type: ignore[attr-defined]
    await browser.page.wait_for_timeout(800)  # type: ignore[attr-defined]  # GraphiQL re-reads the operation
    await browser.page.locator(".graphiql-execute-button").click()  # type: ignore[attr-defined]
    try:
        await subscribed(live, 1)
    except AssertionError:
        await _shot(browser, "graphiql-subscription-failed.png")
        raise AssertionError(f"no subscription: {browser.console_errors}") from None
    await patch(live, live.pool, title="Procurement lead (GraphiQL)")
    await browser.page.wait_for_function(  # type: ignore[attr-defined]
        "() => (document.querySelector('.result-window')?.innerText || '').includes('Procurement lead (GraphiQL)')",
        timeout=10_000,
    )
    shown = await _result(browser)
    await _shot(browser, "graphiql-subscription.png")
    assert "ACCOUNT_UPDATED" in shown and "*******" in shown
    assert browser.console_errors == []
    assert browser.foreign == []  # nothing was asked of another origin: it works on a closed network
