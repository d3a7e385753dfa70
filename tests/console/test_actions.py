"""Console actions over plain HTTP (what a browser without JavaScript does): the playground's
full-page answer and its refusals, the `console` key's role, and enabling/disabling a channel."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import httpx
from PIL import Image

from bananagate.config import channel_from_fields
from bananagate.console.channels import set_channel_enabled
from bananagate.store import KeyCipher, Store
from tests.conftest import Gateway, start_gateway, stop_gateway

from .conftest import ADMIN_KEY, csrf_of, sign_in


def post(client: httpx.Client, path: str, data: dict[str, str], files: object = None) -> httpx.Response:
    token = csrf_of(client.get("/console/").text)
    origin = {"origin": str(client.base_url).rstrip("/")}
    return client.post(path, data={"csrf_token": token, **data}, files=files, headers=origin)  # type: ignore[arg-type]


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def test_playground_without_javascript_answers_with_a_whole_page(admin: httpx.Client) -> None:
    response = post(
        admin,
        "/console/playground",
        {
            "prompt": "Put a hat on it",
            "model": "gemini-3-pro-image-preview",
            "aspect_ratio": "4:3",
            "image_size": "2K",
        },
        files=[("images", ("in.png", png(), "image/png"))],
    )
    assert response.status_code == 200
    assert "<h1>Playground</h1>" in response.text and "data-result" in response.text
    assert "$0.134" in response.text  # 3 Pro at 2K
    match = re.search(r'<img src="(/console/gallery/\d+/image)"', response.text)
    assert match is not None
    image_path = match.group(1)
    image = admin.get(image_path)
    assert image.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.size == (2400, 1792)
    download = admin.get(image_path.replace("/image", "/download"))
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["content-disposition"].endswith('.jpg"')


def test_playground_refusals_are_shown_next_to_the_form(admin: httpx.Client) -> None:
    four = [("images", (f"{i}.png", png(), "image/png")) for i in range(4)]
    fields = {"prompt": "x", "model": "gemini-2.5-flash-image"}
    too_many = post(admin, "/console/playground", fields, files=four)
    assert too_many.status_code == 400 and "takes at most 3 images" in too_many.text
    wrong_ratio = post(admin, "/console/playground", {**fields, "aspect_ratio": "1:8"})
    assert wrong_ratio.status_code == 400 and "has no aspect ratio 1:8" in wrong_ratio.text
    not_image = post(admin, "/console/playground", fields, files=[("images", ("a.txt", b"hi", "text/plain"))])
    assert not_image.status_code == 400 and "not a PNG" in not_image.text
    upstream = post(admin, "/console/playground", {**fields, "prompt": "x [emulate: status=429]"})
    assert upstream.status_code == 429 and "data-result-error" in upstream.text


def test_revoking_the_console_key_turns_the_playground_off(
    admin: httpx.Client, console_gateway: Gateway
) -> None:
    post(admin, "/console/playground", {"prompt": "warm-up", "model": "gemini-2.5-flash-image"})
    assert post(admin, "/console/keys/console/revoke", {}).status_code == 303
    try:
        refused = post(admin, "/console/playground", {"prompt": "x", "model": "gemini-2.5-flash-image"})
        assert refused.status_code == 403 and "revoked" in refused.text
    finally:
        # Only for the other tests sharing this gateway: a fresh `console` key is made on next use.
        with Store.open(f"sqlite:///{console_gateway.data_dir / 'bananagate.db'}") as store:
            store.keys.delete_key("console")
    again = post(admin, "/console/playground", {"prompt": "x", "model": "gemini-2.5-flash-image"})
    assert again.status_code == 200


def test_set_channel_enabled_reaches_the_loaded_config(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'c.db'}") as store:
        cipher = KeyCipher.load(None, tmp_path)
        store.channels.add(name="relay", kind="emulator", keys=[], cipher=cipher)
        before = store.channels.signature()
        time.sleep(0.01)
        assert set_channel_enabled(store, "relay", False)
        record = store.channels.get("relay")
        assert record is not None and channel_from_fields(record.fields(), []).enabled is False
        assert store.channels.signature() != before  # so every running server reloads it
        assert set_channel_enabled(store, "relay", True)
        record = store.channels.get("relay")
        assert record is not None and channel_from_fields(record.fields(), []).enabled is True
        assert not set_channel_enabled(store, "nope", False)


def test_channels_page_disables_and_enables_a_database_channel(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    data.mkdir()
    with Store.open(f"sqlite:///{data / 'bananagate.db'}") as store:
        store.channels.add(name="second", kind="emulator", keys=[], cipher=KeyCipher.load(None, data))
    gw = start_gateway(data, env={"BANANAGATE_ADMIN_KEY": "ak-channels"})
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            assert sign_in(client, "ak-channels").status_code == 303
            page = client.get("/console/channels").text
            assert 'data-channel="second" data-enabled="true"' in page
            models = client.get("/v1beta/models", headers={"x-goog-api-key": gw.key}).json()["models"]
            assert models
            assert post(client, "/console/channels/second/enabled", {"enabled": "off"}).status_code == 303
            assert 'data-channel="second" data-enabled="false"' in client.get("/console/channels").text
            # The only channel is off: nothing is served any more.
            assert client.get("/v1beta/models", headers={"x-goog-api-key": gw.key}).json().get("models") in (
                None,
                [],
            )
            assert post(client, "/console/channels/second/enabled", {"enabled": "on"}).status_code == 303
            assert client.get("/v1beta/models", headers={"x-goog-api-key": gw.key}).json()["models"] == models
            probe = post(client, "/console/channels/second/test", {})
            assert 'data-probe="second" data-probe-ok="true"' in probe.text
    finally:
        stop_gateway(gw)


def test_key_limits_are_set_and_cleared_from_the_keys_page(
    admin: httpx.Client, console_gateway: Gateway
) -> None:
    created = post(
        admin, "/console/keys", {"name": "limited", "rpm": "7", "models": "gemini-2.5-flash-image"}
    )
    assert created.status_code == 200 and 'data-created="limited"' in created.text
    bad = post(admin, "/console/keys/limited/limits", {"rpm": "seven"})
    assert bad.status_code == 400 and "whole number" in bad.text
    saved = post(
        admin,
        "/console/keys/limited/limits",
        {"budget_usd": "2.5", "images_per_day": "10", "expires_at": "30d", "allow_cidrs": "10.0.0.0/8"},
    )
    assert saved.status_code == 303 and saved.headers["location"].startswith("/console/keys?done=saved")
    key = httpx.get(
        f"{console_gateway.url}/admin/keys/limited", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ).json()
    # Emptied boxes clear their limits: rpm and models were not sent again.
    assert key["budget_usd"] == "2.5" and key["images_per_day"] == 10 and key["rpm"] is None
    assert key["models"] == [] and key["allow_cidrs"] == ["10.0.0.0/8"] and key["expires_at"]
    assert "Limits of limited saved." in admin.get(saved.headers["location"]).text


def test_gallery_playground_keeps_the_playground_s_images_and_not_the_api_s(tmp_path: Path) -> None:
    """`BANANAGATE_GALLERY=playground`: the console without the gallery's cost on API calls."""
    gw = start_gateway(tmp_path, env={"BANANAGATE_ADMIN_KEY": ADMIN_KEY, "BANANAGATE_GALLERY": "playground"})
    try:
        api = httpx.post(
            f"{gw.url}/v1beta/models/gemini-2.5-flash-image:generateContent",
            json={"contents": [{"parts": [{"text": "A red bicycle"}]}]},
            headers={"x-goog-api-key": gw.key},
            timeout=60,
        )
        assert api.status_code == 200 and "inlineData" in api.text
        with httpx.Client(base_url=gw.url, timeout=60) as admin:
            assert sign_in(admin).status_code == 303
            page = post(admin, "/console/playground", {"prompt": "A hat", "model": "gemini-2.5-flash-image"})
            assert page.status_code == 200
            shown = re.search(r'<img src="(/console/gallery/\d+/image)"', page.text)
            assert shown is not None and admin.get(shown.group(1)).headers["content-type"] == "image/png"
            api_id = api.headers["x-request-id"]
            assert "Only the playground's images are kept" in admin.get("/console/gallery").text
        with Store.open(f"sqlite:///{gw.data_dir / 'bananagate.db'}") as store:
            store.gallery.configure(gw.data_dir / "gallery", max_bytes=None)
            assert store.gallery.totals()[0] == 1  # the playground's one image, not the API's
            assert store.gallery.by_request(api_id) == []
            # ... though the API call was metered as always.
            row = store.ledger.get(api_id)
            assert row is not None and row.images == 1
    finally:
        stop_gateway(gw)
