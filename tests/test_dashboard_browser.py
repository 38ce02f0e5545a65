"""The dashboard in a real browser: Debian's chromium (/usr/bin/chromium) driven by
Playwright, the gateway mounted at /ai in a Starlette app over loopback, an OpenAI-compatible
upstream on loopback behind it, and the official `openai` SDK as the client.

Sign in; a chat request appears in the live log within 2 s; the log filtered by model; a key
created, used, revoked and then refused; a broken config validated with its line shown. Each
page is saved as a screenshot under the test's temporary folder (`screens/`)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.helpers import ADMIN, config, openai_compatible
from tests.servers import Upstream, running
from thanos_asgi import Gateway
from thanos_asgi.frontends.stack import build_app
from thanos_asgi.governance.keys import RELOAD_EVERY

pytestmark = pytest.mark.anyio

CHROMIUM = "/usr/bin/chromium"
LIVE_WITHIN = 2.0  # seconds from the SDK's answer to its row in the live log

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api")


def gateway_config(tmp_path: Path, upstream: str) -> str:
    return (
        openai_compatible("fake", upstream, "m1", "m2")
        + f'[server]\nkey_store = "{tmp_path / "keys.db"}"\n'
        + f'[[server.keys]]\nid = "admin"\nkey = "{ADMIN}"\nadmin = true\n'
        + f'[cost]\nledger_path = "{tmp_path / "usage.db"}"\n'
    )


async def ask(url: str, key: str, model: str) -> Any:
    async with openai.AsyncOpenAI(base_url=f"{url}/ai/v1", api_key=key, max_retries=0) as sdk:
        return await sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}]
        )


async def test_the_dashboard_in_chromium(tmp_path: Path) -> None:
    screens = tmp_path / "screens"
    screens.mkdir()
    async with running(Upstream()) as upstream:
        gateway = Gateway(config(gateway_config(tmp_path, upstream)))
        host = Starlette(routes=[Mount("/ai", app=build_app(gateway))])
        async with running(host) as url, async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            try:
                await _walk(page, url, screens)
            finally:
                await browser.close()
                await gateway.aclose()
    assert not [p for p in problems if "Content Security Policy" in p], problems
    names = sorted(p.name for p in screens.iterdir())
    assert names == [
        "1-signin.png",
        "2-requests-live.png",
        "3-requests-filtered.png",
        "4-keys-created.png",
        "5-keys-revoked.png",
        "6-providers.png",
        "7-config-invalid.png",
        "8-overview.png",
    ]
    target = os.environ.get("THANOS_SCREENS")  # where to copy them, when asked
    if target:
        shutil.copytree(screens, target, dirs_exist_ok=True)


async def _walk(page: Any, url: str, screens: Path) -> None:
    await page.goto(f"{url}/ai/dashboard")
    await page.wait_for_selector("#signin-key")
    await page.screenshot(path=screens / "1-signin.png")
    await page.fill("#signin-key", ADMIN)
    await page.click("#signin-button")
    await page.wait_for_selector("#nav a[href='#requests']")
    cookies: str = await page.evaluate("document.cookie")
    assert "thanos_session" not in cookies and "thanos_csrf" in cookies  # HttpOnly session
    assert ADMIN not in await page.evaluate("JSON.stringify(localStorage)+location.href")
    await _live_log(page, url, screens)
    await _keys(page, url, screens)
    await page.click("#nav a[href='#providers']")
    await page.wait_for_selector("#providers tbody tr")
    await page.screenshot(path=screens / "6-providers.png", full_page=True)
    await _config(page, screens)
    await page.click("#nav a[href='#overview']")
    await page.wait_for_selector("#cards .card")
    await page.wait_for_selector("#chart-requests svg path.s0")
    await page.screenshot(path=screens / "8-overview.png", full_page=True)


async def _live_log(page: Any, url: str, screens: Path) -> None:
    await page.click("#nav a[href='#requests']")
    await page.wait_for_selector("#live-state:text-is('live')")  # (the CSP forbids eval)
    reply = await ask(url, ADMIN, "fake/m1")
    answered = time.perf_counter()
    await page.wait_for_selector(
        f"#log tbody tr[data-request-id='{reply.id}'], #log tbody tr[data-model='m1']",
        timeout=LIVE_WITHIN * 1000,
    )
    seen = time.perf_counter() - answered
    assert seen < LIVE_WITHIN
    (screens.parent / "live-latency.txt").write_text(f"{seen * 1000:.0f} ms\n")
    await ask(url, ADMIN, "fake/m2")
    await page.wait_for_selector("#log tbody tr[data-model='m2']", timeout=LIVE_WITHIN * 1000)
    await page.screenshot(path=screens / "2-requests-live.png", full_page=True)
    await page.fill("#filter-model", "m2")
    await page.click("#filter-apply")
    await page.wait_for_selector("#log tbody tr:not([data-model='m2'])", state="detached")
    models = await page.eval_on_selector_all(
        "#log tbody tr", "rows => rows.map(r => r.dataset.model)"
    )
    assert models == ["m2"]
    await ask(url, ADMIN, "fake/m1")  # a live row the filter leaves out
    await page.wait_for_timeout(500)
    models = await page.eval_on_selector_all(
        "#log tbody tr", "rows => rows.map(r => r.dataset.model)"
    )
    assert models == ["m2"]
    await page.screenshot(path=screens / "3-requests-filtered.png", full_page=True)


async def _keys(page: Any, url: str, screens: Path) -> None:
    await page.click("#nav a[href='#keys']")
    await page.wait_for_selector("#keys tbody tr[data-id='admin']")
    await page.fill("#key-id", "browser-team")
    await page.fill("#key-rpm", "60")
    await page.click("#key-create")
    await page.wait_for_selector("#keys tbody tr[data-id='browser-team']")
    secret = await page.text_content("#key-secret")
    assert secret and secret.startswith("thk_")
    await page.screenshot(path=screens / "4-keys-created.png", full_page=True)
    await page.wait_for_timeout(RELOAD_EVERY * 1000 + 100)  # every process re-reads keys.db
    assert (await ask(url, secret, "fake/m1")).choices[0].message.content == "echo: hello"
    page.on("dialog", lambda dialog: dialog.accept())
    await page.click("#keys tbody tr[data-id='browser-team'] button.revoke")
    await page.wait_for_selector("#keys tbody tr[data-id='browser-team'] >> text=revoked")
    await page.screenshot(path=screens / "5-keys-revoked.png", full_page=True)
    await page.wait_for_timeout(RELOAD_EVERY * 1000 + 100)
    with pytest.raises(openai.AuthenticationError):
        await ask(url, secret, "fake/m1")


async def _config(page: Any, screens: Path) -> None:
    await page.click("#nav a[href='#config']")
    await page.wait_for_selector("#config-current:not(:empty)")
    broken = '[providers.fake]\nkind = "openai-compatible"\nmodels = ["m1",\n[server]\n'
    await page.fill("#config-text", broken)
    await page.click("#config-validate")
    await page.wait_for_selector("#config-result.invalid")
    shown = await page.text_content("#config-result")
    assert shown and "line 4, column 2" in shown, shown
    assert await page.get_attribute("#config-result", "data-line") == "4"
    await page.screenshot(path=screens / "7-config-invalid.png", full_page=True)
