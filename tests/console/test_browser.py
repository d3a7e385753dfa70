"""The console in a real browser (Debian's Chromium, headless) against a real `bananagate serve`.

One story, in the order a person would go: sign in, generate (watching the progress), download,
find the image in the gallery, create a key and use it from curl, see usage move, revoke the key
and see curl fail. Then every page at desktop and phone width, saved as screenshots under
artifacts/screenshots/ and checked for labels, keyboard reach and sideways overflow.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Gateway

from .conftest import ADMIN_KEY, DESKTOP, PHONE, screenshot

CURL = shutil.which("curl")
FLASH = "gemini-2.5-flash-image"

# Controls without an accessible name (label, aria-label, aria-labelledby), hidden inputs aside.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 120))"""


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def curl_generate(gateway: Gateway, key: str, workdir: Path) -> tuple[int, dict[str, Any]]:
    assert CURL is not None
    body = workdir / "body.json"
    body.write_text(json.dumps({"contents": [{"parts": [{"text": "A lighthouse at dusk"}]}]}))
    out = workdir / "out.json"
    status = subprocess.run(
        [CURL, "-s", "-o", str(out), "-w", "%{http_code}", "-X", "POST",
         f"{gateway.url}/v1beta/models/{FLASH}:generateContent",
         "-H", f"x-goog-api-key: {key}", "-H", "Content-Type: application/json", "-d", f"@{body}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return int(status), json.loads(out.read_text())


def requests_today(page: Any, gateway: Gateway) -> float:
    page.goto(f"{gateway.url}/console/usage")
    return float(page.locator('[data-chart="Requests per day"] rect.bar').last.get_attribute("data-value"))


def sign_in(page: Any, gateway: Gateway) -> None:
    page.goto(f"{gateway.url}/console/")
    if page.url.startswith(f"{gateway.url}/console/login"):
        page.fill("#admin_key", ADMIN_KEY)
        page.click("button[type=submit]")
        page.wait_for_url(f"{gateway.url}/console/")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_story_sign_in_generate_download_gallery_keys_usage(
    browser_context: Any, console_gateway: Gateway, tmp_path: Path
) -> None:
    gw = console_gateway
    page = browser_context.new_page()
    page.set_viewport_size(DESKTOP)
    page.on("dialog", lambda dialog: dialog.accept())

    # --- sign in: a wrong key is refused, the right one lands on the playground ---
    page.goto(f"{gw.url}/console/keys")
    assert page.url.startswith(f"{gw.url}/console/login")
    page.fill("#admin_key", "ak-not-the-key")
    page.click("button[type=submit]")
    assert "That is not the admin key." in page.inner_text("[role=alert]")
    page.fill("#admin_key", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gw.url}/console/keys")  # back where it was sent from
    page.goto(f"{gw.url}/console/")
    assert page.inner_text("h1") == "Playground"

    # --- the ratio and size menus follow the model's table ---
    page.select_option("#model", "gemini-3.1-flash-image-preview")
    assert "1:8" in page.locator("#aspect_ratio option").all_inner_texts()
    assert page.locator("#image_size option").all_inner_texts() == ["512", "1K", "2K", "4K"]
    assert page.inner_text("[data-limit-label]") == "14"
    page.select_option("#model", FLASH)
    assert "1:8" not in page.locator("#aspect_ratio option").all_inner_texts()
    assert page.inner_text("[data-limit-label]") == "3"
    assert FLASH in page.locator("#model option:checked").inner_text()
    assert page.locator("#image_size option").all_inner_texts() == ["1K"]

    # --- generate: a slow answer shows a running timer, then image, text, cost, latency ---
    baseline = requests_today(page, gw)
    page.goto(f"{gw.url}/console/")
    page.fill("#prompt", "A kitten napping on a sunny windowsill, watercolor [emulate: delay=1.5]")
    page.select_option("#aspect_ratio", "16:9")
    page.click("[data-submit]")
    page.wait_for_selector("[data-progress]", state="visible")
    assert page.is_disabled("[data-submit]")
    # The timer runs while the request is out (polled from here: the CSP forbids eval in the page).
    page.wait_for_timeout(700)
    assert float(page.inner_text("[data-elapsed]")) >= 0.5
    assert page.is_visible("[data-progress]")
    page.wait_for_selector("[data-result] img", timeout=30_000)
    assert page.is_hidden("[data-progress]")
    assert page.inner_text("[data-cost]") == "$0.039"
    assert page.inner_text("[data-latency]").endswith(" s")
    assert float(page.inner_text("[data-latency]").split()[0]) >= 1.4
    screenshot(page, "playground-result-desktop")

    # --- download: the file name has the PNG extension and Pillow opens it ---
    with page.expect_download() as info:
        page.click("[data-result] [data-download]")
    download = info.value
    assert download.suggested_filename.endswith(".png")
    saved = tmp_path / download.suggested_filename
    download.save_as(str(saved))
    with Image.open(saved) as image:
        assert image.format == "PNG" and image.size == (1344, 768)

    # --- the gallery has it, filters by key and model, and shows prompt, parameters and cost ---
    page.click("text=Details in the gallery")
    assert "A kitten napping" in page.inner_text("[data-prompt]")
    assert page.inner_text("[data-cost]").startswith("$0.039")
    assert "16:9" in page.inner_text(".facts") and "1344×768" in page.inner_text(".facts")
    detail_url = page.url
    page.goto(f"{gw.url}/console/gallery?key=console&model={FLASH}")
    item = detail_url.rsplit("/", 1)[1]
    assert page.locator(f'[data-gallery-item="{item}"]').count() == 1
    assert (
        page.locator(f'[data-gallery-item="{item}"] img').evaluate(
            "img => img.decode().then(() => img.naturalWidth)"
        )
        > 0
    )
    page.goto(f"{gw.url}/console/gallery?model=gemini-3-pro-image-preview")
    assert page.locator(f'[data-gallery-item="{item}"]').count() == 0

    # --- drag and drop more images than 2.5 Flash takes: warned, then sent as one collage ---
    page.goto(f"{gw.url}/console/")
    files = [{"name": f"tile{i}.png", "b64": base64.b64encode(png(c)).decode()} for i, c in
             enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)])]  # fmt: skip
    transfer = page.evaluate_handle(
        """files => { const dt = new DataTransfer();
             for (const f of files) {
               const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
               dt.items.add(new File([bytes], f.name, {type: 'image/png'})); }
             return dt; }""",
        files,
    )
    page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": transfer})
    assert page.locator("[data-previews] li").count() == 4
    assert page.is_visible("[data-too-many]")
    page.check("#collage")
    assert page.is_hidden("[data-too-many]")
    page.fill("#prompt", "The four tiles in a row")
    page.click("[data-submit]")
    page.wait_for_selector("[data-result] img, [data-result-error]", timeout=30_000)
    assert page.locator("[data-result] img").count() == 1
    page.click("text=Details in the gallery")
    assert page.inner_text(".facts").count("Input images\n1") == 1  # one collage went out

    # --- create a key (secret shown once, copy button), use it from curl ---
    page.goto(f"{gw.url}/console/keys")
    page.click("summary:has-text('Create a key')")
    page.fill("#new-name", "curl-user")
    page.fill("#new-budget", "1")
    page.click("[data-create-key] button[type=submit]")
    secret = page.input_value("[data-secret]")
    assert secret.startswith("sk-")
    page.click("[data-copy]")
    page.wait_for_selector("[data-copied]", state="visible")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    status, answer = curl_generate(gw, secret, tmp_path)
    assert status == 200
    assert answer["candidates"][0]["content"]["parts"]

    # --- usage: the chart moved (this playground call, the collage one and curl's) ---
    assert requests_today(page, gw) >= baseline + 3
    assert "curl-user" in page.inner_text("[data-recent]")
    screenshot(page, "usage-after-desktop")

    # --- revoke: the page says so, and curl is refused ---
    page.goto(f"{gw.url}/console/keys")
    page.click('tr[data-key="curl-user"] button:has-text("Revoke")')
    page.wait_for_selector('tr[data-key="curl-user"][data-status="revoked"]')
    status, answer = curl_generate(gw, secret, tmp_path)
    assert status == 401 and answer["error"]["status"] == "UNAUTHENTICATED"

    # --- channels: the test button probes the emulator ---
    page.goto(f"{gw.url}/console/channels")
    page.click('tr[data-channel="emulator"] button:has-text("Test")')
    page.wait_for_selector('[data-probe="emulator"][data-probe-ok="true"]')
    page.close()


PAGES = [
    ("playground", "/console/"),
    ("gallery", "/console/gallery"),
    ("gallery-detail", None),  # the newest image
    ("keys", "/console/keys"),
    ("channels", "/console/channels"),
    ("usage", "/console/usage"),
    ("not-found", "/console/no-such-page"),
]


def test_every_page_at_desktop_and_phone_width(browser_context: Any, console_gateway: Gateway) -> None:
    gw = console_gateway
    # Something to show, made through the API (streamed, so that path lands in the gallery too).
    with httpx.stream(
        "POST",
        f"{gw.url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": gw.key},
        json={"contents": [{"parts": [{"text": "A red bicycle leaning on a wall"}]}]},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        response.read()
    page = browser_context.new_page()
    page.context.clear_cookies()
    for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.goto(f"{gw.url}/console/login")
        screenshot(page, f"login-{width_name}")
        sign_in(page, gw)
        page.goto(f"{gw.url}/console/gallery")
        newest = page.locator("[data-gallery-item] a").first.get_attribute("href")
        for name, path in PAGES:
            page.goto(gw.url + (path or newest))
            page.wait_for_load_state("load")
            assert page.evaluate(UNLABELLED) == [], f"{name}: controls without labels"
            # Nothing sticks out sideways (wide tables scroll inside their own box).
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} at {width_name} width overflows by {overflow}px"
            screenshot(page, f"{name}-{width_name}")
        # Keyboard: the skip link comes first and the navigation is reachable by Tab.
        page.goto(f"{gw.url}/console/usage")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        reached = set()
        for _ in range(12):
            page.keyboard.press("Tab")
            reached.add(page.evaluate("document.activeElement.textContent.trim()"))
        assert {"Playground", "Gallery", "Keys", "Channels", "Usage"} <= reached
        page.context.clear_cookies()
    page.close()
