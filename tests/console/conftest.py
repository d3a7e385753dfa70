"""Fixtures for the web console: one gateway subprocess with a known admin key, signed-in
httpx clients, and Debian's Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import REPO, Gateway, start_gateway, stop_gateway

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

ADMIN_KEY = "ak-console-" + secrets.token_urlsafe(18)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("console"), env={"BANANAGATE_ADMIN_KEY": ADMIN_KEY})
    try:
        yield gw
    finally:
        stop_gateway(gw)


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: httpx.Client, admin_key: str = ADMIN_KEY) -> httpx.Response:
    """The browser's sign-in, by hand: GET the form (anonymous session + token), POST it back."""
    token = csrf_of(client.get("/console/login").text)
    return client.post(
        "/console/login",
        data={"csrf_token": token, "admin_key": admin_key, "next": "/console/"},
        headers={"origin": str(client.base_url).rstrip("/")},
    )


@pytest.fixture
def anonymous(console_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console_gateway.url, timeout=30) as client:
        yield client


@pytest.fixture
def admin(console_gateway: Gateway) -> Iterator[httpx.Client]:
    """A signed-in client (cookie jar holds the session)."""
    with httpx.Client(base_url=console_gateway.url, timeout=60) as client:
        response = sign_in(client)
        assert response.status_code == 303, response.text
        yield client


def chromium_or_skip() -> Path:
    if not CHROMIUM.exists():
        # .ci/run installs it when it runs as root (apt-get install chromium); tests never download one.
        pytest.skip(f"{CHROMIUM} is absent and could not be installed (apt-get install chromium, as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """A fresh Chromium profile per module: headless, no network beyond 127.0.0.1 in practice."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="bananagate-chromium-"))
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(executable),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=DESKTOP,
                accept_downloads=True,
                permissions=["clipboard-read", "clipboard-write"],
            )
            context.set_default_timeout(20_000)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
