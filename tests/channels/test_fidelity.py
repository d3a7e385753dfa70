"""Bytes and auth on the wire: real upstream fakes see exactly the client's body and the right
credential; answers come back byte for byte (acceptance 1)."""

from __future__ import annotations

import base64
import random
import socket
from urllib.parse import urlsplit

import orjson
import pytest

from tests.channels.conftest import (
    COMET_KEY,
    FLASH_25,
    FLASH_31,
    GOOGLE_KEY,
    PRO_3,
    GatewayFactory,
    client_for,
    fidelity_body,
    image_of,
    simple_body,
    toml_channel,
)
from tests.upstreams import FakeComet, FakeGoogle, google_error


@pytest.fixture
def bearer_relay() -> FakeComet:
    with FakeComet(keys=["relay-key-0123456789"], name="relay", colour=(90, 0, 90)) as upstream:
        yield upstream  # type: ignore[misc]


def test_body_and_auth_reach_each_kind_untouched(
    gateway_with: GatewayFactory, google: FakeGoogle, comet: FakeComet, bearer_relay: FakeComet
) -> None:
    config = (
        toml_channel("google", "gemini", google.url, keys=[GOOGLE_KEY], models=[FLASH_25])
        + toml_channel(
            "comet",
            "cometapi",
            comet.url,
            keys=[COMET_KEY],
            models=[PRO_3],
            model_map={PRO_3: "nano-banana-pro"},
        )
        + toml_channel(
            "relay",
            "gemini-compatible",
            bearer_relay.url,
            keys=["relay-key-0123456789"],
            auth="bearer",
            models=[FLASH_31],
        )
    )
    gateway = gateway_with(config)
    body = fidelity_body()
    with client_for(gateway) as client:
        # Google: x-goog-api-key, nothing else carrying a credential.
        response = client.post(f"/v1beta/models/{FLASH_25}:generateContent", content=body)
        assert response.status_code == 200, response.text
        seen = google.requests[-1]
        assert seen.body == body
        assert seen.header("x-goog-api-key") == GOOGLE_KEY
        assert seen.header("authorization") is None and "key" not in seen.query
        assert seen.path == f"/v1beta/models/{FLASH_25}:generateContent"
        assert seen.header("content-type") == "application/json"
        assert seen.header("user-agent").startswith("bananagate/")
        assert gateway.key not in str(seen.headers) + str(seen.query)  # the client's own key stays here
        # The answer's bytes (Google pretty-prints) come back as they were.
        assert response.content == google.requests[-1].reply_body
        assert response.headers["x-bananagate-channel"] == "google"
        assert response.headers["x-bananagate-attempts"] == "1"

        # CometAPI: the raw key in Authorization; model_map renames the model in the URL only.
        response = client.post(f"/v1beta/models/{PRO_3}:generateContent", content=body)
        assert response.status_code == 200, response.text
        seen = comet.requests[-1]
        assert seen.header("authorization") == COMET_KEY
        assert seen.header("x-goog-api-key") is None
        assert seen.path == "/v1beta/models/nano-banana-pro:generateContent"
        assert seen.body == body
        assert image_of(response.json()) == comet.image

        # gemini-compatible with Bearer.
        response = client.post(f"/v1beta/models/{FLASH_31}:generateContent", content=body)
        assert response.status_code == 200, response.text
        seen = bearer_relay.requests[-1]
        assert seen.header("authorization") == "Bearer relay-key-0123456789"
        assert seen.body == body

        # The retired preview name is an alias: rewritten in the URL, body untouched.
        response = client.post("/v1beta/models/gemini-2.5-flash-image-preview:generateContent", content=body)
        assert response.status_code == 200, response.text
        seen = google.requests[-1]
        assert seen.path == f"/v1beta/models/{FLASH_25}:generateContent"
        assert seen.body == body

        # Streaming: `alt=sse` upstream, each event passed on byte for byte.
        with client.stream(
            "POST", f"/v1beta/models/{FLASH_25}:streamGenerateContent?alt=sse", content=body
        ) as r:
            assert r.status_code == 200
            raw = r.read()
        seen = google.requests[-1]
        assert seen.query == {"alt": "sse"} and seen.body == body
        events = [e[len(b"data: ") :] for e in raw.split(b"\r\n\r\n") if e]
        assert [orjson.loads(e) for e in events][1]["candidates"][0]["finishReason"] == "STOP"
        assert events == seen.reply_events

        # Client errors come back at once, with the upstream's message and no retry.
        google.enqueue(google_error(400, "Request contains an invalid argument."))
        count = len(google.requests)
        response = client.post(f"/v1beta/models/{FLASH_25}:generateContent", content=simple_body())
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "Request contains an invalid argument."
        assert len(google.requests) == count + 1
        assert response.headers["x-bananagate-attempts"] == "1"

        # Models no channel serves are unknown here, as Google words it.
        listed = {m["name"] for m in client.get("/v1beta/models").json()["models"]}
        assert listed == {
            f"models/{m}" for m in (FLASH_25, "gemini-2.5-flash-image-preview", PRO_3, FLASH_31)
        }


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_big_body_in_small_pieces_reaches_the_upstream_byte_for_byte(
    gateway_with: GatewayFactory, google: FakeGoogle, framing: str
) -> None:
    """The server keeps request body pieces as the parser hands them over (server/http11.py):
    however a client's bytes arrive, what goes up is what was sent, and one connection serves on."""
    gateway = gateway_with(toml_channel("google", "gemini", google.url, keys=[GOOGLE_KEY], models=[FLASH_25]))
    image = base64.b64encode(random.Random(7).randbytes(3 * 1024 * 1024)).decode()
    body = fidelity_body().replace(b'"contents"', f'"pad": "{image}", "contents"'.encode(), 1)
    rng = random.Random(framing)
    pieces, at = [], 0
    while at < len(body):
        size = rng.choice([1, 7, 300, 4096, 65536, 300_000])
        pieces.append(body[at : at + size])
        at += size
    head = (
        f"POST /v1beta/models/{FLASH_25}:generateContent HTTP/1.1\r\nhost: gw\r\n"
        f"x-goog-api-key: {gateway.key}\r\ncontent-type: application/json\r\n"
    )
    if framing == "chunked":
        head += "transfer-encoding: chunked\r\n\r\n"
        wire = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]
    else:
        head += f"content-length: {len(body)}\r\n\r\n"
        wire = pieces
    address = urlsplit(gateway.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        for _ in range(2):  # twice on one keep-alive connection
            sock.sendall(head.encode())
            for piece in wire:
                sock.sendall(piece)
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            response_head, _, rest = received.partition(b"\r\n\r\n")
            length = int(response_head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += sock.recv(65536)
            assert response_head.startswith(b"HTTP/1.1 200"), response_head + rest[:300]
            assert google.requests[-1].body == body
    assert len(google.requests) == 2
