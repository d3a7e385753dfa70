"""The SSRF guard on fetched images: `image_url`s of chat requests (through a real gateway) and
the fetcher itself (in process, with a stand-in resolver)."""

from __future__ import annotations

import base64
import ipaddress

import httpx
import pytest
from openai import OpenAI

from bananagate.server.fetch import FetchError, FetchPolicy, ImageFetcher, address_allowed, inline_file_data
from tests.conftest import Gateway
from tests.openai.conftest import FLASH_25, ImageServer, Served, decode, png, sdk


@pytest.fixture(scope="module")
def served(image_server: ImageServer) -> ImageServer:
    image_server.routes.update(
        {
            "/wide.png": Served(png((1600, 900))),
            "/octet.png": Served(png((900, 1600)), content_type="application/octet-stream"),
            "/page.html": Served(b"<html>hello</html>", content_type="text/html"),
            "/fake.png": Served(b"GIF89a not what it says", content_type="image/png"),
            "/big.png": Served(b"\x89PNG\r\n\x1a\n" + b"\0" * 400_000),
            "/slow.png": Served(png(), delay=3.0),
            "/missing.png": Served(b"gone", status=404, content_type="text/plain"),
            "/hop": Served(b"", status=302, headers={"location": "/wide.png"}),
            "/loop": Served(b"", status=302, headers={"location": "/loop"}),
        }
    )
    return image_server


def chat(client: OpenAI, url: str) -> httpx.Response:
    raw = client.chat.completions.with_raw_response.create(
        model=FLASH_25,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "edit"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    return raw.http_response


def chat_status(gateway: Gateway, url: str) -> tuple[int, dict]:
    body = {
        "model": FLASH_25,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "edit"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {gateway.key}"},
        timeout=30,
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/wide.png",
        "http://localhost:{port}/wide.png",  # a DNS name that resolves to loopback
        "http://10.0.0.1/cat.png",
        "http://10.255.1.2:8080/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/wide.png",
        "http://[::ffff:127.0.0.1]:{port}/wide.png",  # IPv4-mapped IPv6
        "http://0x7f000001:{port}/wide.png",  # 127.0.0.1 spelled as one hex number
        "http://192.168.1.1/a.png",
        "http://100.64.0.1/a.png",  # shared address space (carrier NAT)
    ],
)
def test_private_targets_are_refused(gateway: Gateway, served: ImageServer, url: str) -> None:
    before = len(served.seen_hosts)
    status, body = chat_status(gateway, url.format(port=served.port))
    assert status == 400, body
    assert "non-public address" in body["error"]["message"]
    assert body["error"]["code"] == "invalid_image_url"
    assert len(served.seen_hosts) == before  # refused before any connection


def test_allowed_server_image_is_fetched(open_gateway: Gateway, served: ImageServer) -> None:
    with sdk(open_gateway) as client:
        answer = chat(client, served.url("/wide.png"))
        assert answer.status_code == 200
        images = answer.json()["choices"][0]["message"]["images"]
        # The emulator follows the input's ratio: 16:9 proves the fetched image was used.
        data = images[0]["image_url"]["url"].split(",", 1)[1]
        assert decode(base64.b64decode(data)).size == (1344, 768)
        usage = answer.json()["usage"]
        assert usage["prompt_tokens_details"]["image_tokens"] == 258
        # Generic binary Content-Type is fine when the bytes are an image; the bytes decide.
        tall = chat(client, served.url("/octet.png")).json()
        data = tall["choices"][0]["message"]["images"][0]["image_url"]["url"].split(",", 1)[1]
        assert decode(base64.b64decode(data)).size == (768, 1344)
        # Redirects are followed (and re-checked).
        assert chat(client, served.url("/hop")).status_code == 200


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/page.html", "Content-Type 'text/html' is not an image"),
        ("/fake.png", "not a PNG, JPEG, WebP, HEIC or HEIF image"),
        ("/big.png", "larger than 300000 bytes"),
        ("/slow.png", "no answer within 1.5 s"),
        ("/missing.png", "HTTP 404"),
        ("/loop", "more than 3 redirects"),
    ],
)
def test_fetch_limits(open_gateway: Gateway, served: ImageServer, path: str, reason: str) -> None:
    status, body = chat_status(open_gateway, served.url(path))
    assert status == 400, body
    assert reason in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


# --- the fetcher in process ------------------------------------------------------------------------


def test_address_policy() -> None:
    closed = FetchPolicy()
    for text in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::1",
        "224.0.0.1",
    ):
        assert not address_allowed(ipaddress.ip_address(text), closed), text
    for text in ("93.184.216.34", "2606:4700::1111", "8.8.8.8"):
        assert address_allowed(ipaddress.ip_address(text), closed), text
    listed = FetchPolicy(allowed_networks=FetchPolicy.parse_networks("127.0.0.1/32, 10.9.0.0/16"))
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), listed)
    assert address_allowed(ipaddress.ip_address("10.9.8.7"), listed)
    assert not address_allowed(ipaddress.ip_address("127.0.0.2"), listed)
    anything = FetchPolicy(allow_private=True)
    assert address_allowed(ipaddress.ip_address("10.0.0.1"), anything)
    assert not address_allowed(ipaddress.ip_address("224.0.0.1"), anything)  # never multicast


async def test_connection_is_pinned_to_the_checked_address(served: ImageServer) -> None:
    # A rebinding resolver: the first answer passes the check, later ones point elsewhere.
    answers = [["127.0.0.1"], ["10.0.0.1"], ["10.0.0.1"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[len(asked) - 1]

    policy = FetchPolicy(allowed_networks=FetchPolicy.parse_networks("127.0.0.1/32"))
    fetcher = ImageFetcher(policy, resolver=rebinding)
    try:
        before = len(served.seen_hosts)
        image = await fetcher.fetch(f"http://rebind.test:{served.port}/wide.png")
        assert image.mime_type == "image/png" and decode(image.data).size == (1600, 900)
        # One resolution, and the connection went to its address (the name itself resolves
        # nowhere) while the server saw the name in Host.
        assert asked == ["rebind.test"]
        assert served.seen_hosts[before:] == [f"rebind.test:{served.port}"]
    finally:
        await fetcher.aclose()


async def test_every_resolved_address_must_pass(served: ImageServer) -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "10.0.0.7"]

    policy = FetchPolicy(allowed_networks=FetchPolicy.parse_networks("127.0.0.1/32"))
    fetcher = ImageFetcher(policy, resolver=mixed)
    try:
        with pytest.raises(FetchError, match=r"resolves to 10\.0\.0\.7"):
            await fetcher.fetch(f"http://mixed.test:{served.port}/wide.png")
    finally:
        await fetcher.aclose()


async def test_redirect_to_an_unchecked_address_is_refused(served: ImageServer) -> None:
    served.routes["/to-other"] = Served(
        b"", status=307, headers={"location": f"http://127.0.0.2:{served.port}/wide.png"}
    )
    fetcher = ImageFetcher(FetchPolicy(allowed_networks=FetchPolicy.parse_networks("127.0.0.1/32")))
    try:
        with pytest.raises(FetchError, match=r"127\.0\.0\.2 is a loopback"):
            await fetcher.fetch(served.url("/to-other"))
        for bad in ("file:///etc/passwd", "gopher://127.0.0.1/", "http://user:pw@127.0.0.1/", "not a url"):
            with pytest.raises(FetchError):
                await fetcher.fetch(bad)
    finally:
        await fetcher.aclose()


async def test_inline_file_data_for_gemini_requests(served: ImageServer) -> None:
    body = {
        "contents": [
            {
                "parts": [
                    {"text": "edit"},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": served.url("/wide.png")}},
                    {"file_data": {"mime_type": "image/png", "file_uri": "https://files.example/keep-me"}},
                ]
            }
        ]
    }
    fetcher = ImageFetcher(FetchPolicy(allow_private=True))
    try:
        await inline_file_data(
            body,
            fetcher,
            max_images=3,
            max_total_bytes=10_000_000,
            should_fetch=lambda uri: "127.0.0.1" in uri,
        )
    finally:
        await fetcher.aclose()
    parts = body["contents"][0]["parts"]
    assert parts[1]["inlineData"]["mimeType"] == "image/png"  # what the bytes are, not what was claimed
    assert decode(base64.b64decode(parts[1]["inlineData"]["data"])).size == (1600, 900)
    assert "file_data" in parts[2]  # left alone by should_fetch
