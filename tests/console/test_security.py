"""The console's doors, with httpx: who gets in, which forms are accepted, which headers ride along.

A wrong admin key reaches no page and no action; a form without the session's CSRF token, with a
stale one, or sent from another origin is refused with 403 and changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from bananagate.console.app import STATIC_DIR, TEMPLATE_DIR
from tests.conftest import Gateway

from .conftest import ADMIN_KEY, csrf_of, sign_in

PAGES = [
    "/console/",
    "/console/gallery",
    "/console/gallery/1",
    "/console/gallery/1/image",
    "/console/gallery/1/thumb",
    "/console/gallery/1/download",
    "/console/keys",
    "/console/channels",
    "/console/usage",
]
ACTIONS = [
    "/console/playground",
    "/console/keys",
    "/console/keys/default/limits",
    "/console/keys/default/revoke",
    "/console/gallery/1/delete",
    "/console/channels/emulator/test",
    "/console/channels/emulator/enabled",
    "/console/logout",
]


def admin_api_key(gateway: Gateway, name: str) -> dict[str, object] | None:
    response = httpx.get(
        f"{gateway.url}/admin/keys/{name}", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    return response.json() if response.status_code == 200 else None


def origin(client: httpx.Client) -> dict[str, str]:
    return {"origin": str(client.base_url).rstrip("/")}


def assert_locked_out(client: httpx.Client) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next="), path
    for path in ACTIONS:
        # Even with a token from the sign-in page and the right origin: no signed-in session.
        token = csrf_of(client.get("/console/login").text)
        response = client.post(path, data={"csrf_token": token, "name": "x"}, headers=origin(client))
        assert response.status_code == 403, path


def test_wrong_admin_key_reaches_no_page_and_no_action(
    anonymous: httpx.Client, console_gateway: Gateway
) -> None:
    response = sign_in(anonymous, "ak-wrong")
    assert response.status_code == 403
    assert "That is not the admin key." in response.text
    assert_locked_out(anonymous)
    # An API key is not the admin key either, nor is the admin key as a header instead of a session.
    assert sign_in(anonymous, console_gateway.key).status_code == 403
    response = anonymous.get("/console/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 303
    assert admin_api_key(console_gateway, "default") is not None
    assert admin_api_key(console_gateway, "x") is None  # the refused "create key" made nothing


def test_forged_or_tampered_cookies_are_ignored(anonymous: httpx.Client) -> None:
    anonymous.get("/console/login")
    cookie = anonymous.cookies["bananagate_console"]
    body, _, signature = cookie.partition(".")
    for forged in (f"{body}.{signature[:-2]}AA", "eyJhIjoieCJ9.AAAA", "garbage", f"{body}."):
        anonymous.cookies.set("bananagate_console", forged, path="/console")
        assert anonymous.get("/console/keys").status_code == 303


def test_sign_in_itself_needs_the_token_and_the_origin(anonymous: httpx.Client) -> None:
    token = csrf_of(anonymous.get("/console/login").text)
    good = {"csrf_token": token, "admin_key": ADMIN_KEY}
    assert (
        anonymous.post("/console/login", data={"admin_key": ADMIN_KEY}, headers=origin(anonymous)).status_code
        == 403
    )
    bad_token = {**good, "csrf_token": "x" * 43}
    assert anonymous.post("/console/login", data=bad_token, headers=origin(anonymous)).status_code == 403
    evil = {"origin": "https://evil.example"}
    assert anonymous.post("/console/login", data=good, headers=evil).status_code == 403
    assert "bananagate_console" in anonymous.cookies  # still only the anonymous session
    assert anonymous.get("/console/keys").status_code == 303
    response = anonymous.post("/console/login", data=good, headers=origin(anonymous))
    assert response.status_code == 303
    assert anonymous.get("/console/keys").status_code == 200


@pytest.mark.parametrize(
    ("case", "headers", "token"),
    [
        ("no token", "same", None),
        ("wrong token", "same", "wrong"),
        ("foreign origin", {"origin": "https://evil.example"}, "good"),
        ("foreign referer, no origin", {"referer": "https://evil.example/page"}, "good"),
        ("opaque origin", {"origin": "null"}, "good"),
        ("neither origin nor referer", {}, "good"),
    ],
)
def test_cross_site_form_posts_are_refused(
    admin: httpx.Client, console_gateway: Gateway, case: str, headers: object, token: str | None
) -> None:
    page = admin.get("/console/keys")
    data = {"name": f"csrf-{abs(hash(case)) % 10**8}"}
    if token == "good":
        data["csrf_token"] = csrf_of(page.text)
    elif token is not None:
        data["csrf_token"] = token
    sent = origin(admin) if headers == "same" else headers
    response = admin.post("/console/keys", data=data, headers=sent)  # type: ignore[arg-type]
    assert response.status_code == 403, case
    assert admin_api_key(console_gateway, data["name"]) is None
    # The same attacker cannot revoke a key either.
    revoke = admin.post("/console/keys/default/revoke", data=data, headers=sent)  # type: ignore[arg-type]
    assert revoke.status_code == 403
    assert admin_api_key(console_gateway, "default")["status"] == "active"  # type: ignore[index]


def test_same_origin_post_with_token_works_also_by_referer(
    admin: httpx.Client, console_gateway: Gateway
) -> None:
    token = csrf_of(admin.get("/console/keys").text)
    referer = {"referer": f"{console_gateway.url}/console/keys"}
    response = admin.post("/console/keys", data={"csrf_token": token, "name": "by-referer"}, headers=referer)
    assert response.status_code == 200
    assert re.search(r'data-secret spellcheck="false"', response.text) or "sk-" in response.text
    assert admin_api_key(console_gateway, "by-referer") is not None


def test_sign_out_ends_the_session(admin: httpx.Client) -> None:
    token = csrf_of(admin.get("/console/").text)
    response = admin.post("/console/logout", data={"csrf_token": token}, headers=origin(admin))
    assert response.status_code == 303
    assert admin.get("/console/keys").status_code == 303


def test_security_headers_and_cookie_flags(anonymous: httpx.Client, admin: httpx.Client) -> None:
    login = anonymous.get("/console/login")
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    for response in (login, admin.get("/console/usage"), admin.get("/console/static/console.js")):
        h = response.headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "same-origin"
    assert admin.get("/console/keys").headers["cache-control"] == "no-store"  # may show a secret


def test_no_inline_scripts_styles_or_remote_assets() -> None:
    """Everything the console serves comes from the package: no CDN, no inline code for the CSP."""
    texts = {p.name: p.read_text() for p in [*TEMPLATE_DIR.glob("*.html"), *STATIC_DIR.glob("*.*")]}
    assert {"console.js", "console.css", "base.html"} <= set(texts)
    for name, text in texts.items():
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), name
            assert " style=" not in text and "<style" not in text, name
            assert not re.search(r"\son[a-z]+=", text), name


def test_console_can_be_switched_off(tmp_path: Path) -> None:
    from tests.conftest import start_gateway, stop_gateway

    gw = start_gateway(tmp_path / "off", env={"BANANAGATE_CONSOLE": "false"})
    try:
        assert httpx.get(f"{gw.url}/console/login").status_code == 404
    finally:
        stop_gateway(gw)
