"""Multi-turn editing: history is resent and thought signatures come back unchanged."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bananagate.client import AsyncClient, Client, NoImageError
from tests.client.conftest import png_bytes
from tests.conftest import Gateway

PRO = "gemini-3-pro-image-preview"
# URL-safe, unpadded: a client that re-encoded it would send a different string.
SIGNATURE = base64.urlsafe_b64encode(b"\xfb\xff opaque signature \xfe").decode().rstrip("=")


def answer(n: int) -> dict[str, Any]:
    image = base64.b64encode(png_bytes((16, 16))).decode()
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": f"thinking {n}", "thought": True, "thoughtSignature": SIGNATURE + "t"},
                        {"text": f"turn {n}"},
                        {
                            "inlineData": {"mimeType": "image/png", "data": image},
                            "thoughtSignature": f"{SIGNATURE}{n}",
                        },
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }


class Recording(httpx.BaseTransport):
    """Records what the client actually sends, then answers like the inner transport."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.read()))
        return self.inner.handle_request(request)


def test_second_turn_carries_the_first_answer_unchanged() -> None:
    answers = iter([answer(1), answer(2)])
    transport = Recording(httpx.MockTransport(lambda r: httpx.Response(200, json=next(answers))))
    with Client("k", base_url="http://gw", transport=transport) as client:
        chat = client.chat(model=PRO, aspect_ratio="1:1")
        first = chat.send("Draw a red bicycle")
        chat.send("Now make it blue", images=png_bytes())
    second = transport.requests[1]["contents"]
    assert [c["role"] for c in second] == ["user", "model", "user"]
    assert second[0] == transport.requests[0]["contents"][0]
    # Byte for byte what the server sent: thought part, text, image and both signatures.
    assert second[1] == first.raw["candidates"][0]["content"]
    assert second[1]["parts"][2]["thoughtSignature"] == f"{SIGNATURE}1"
    assert second[2]["parts"][0] == {"text": "Now make it blue"}
    assert len(chat.history) == 4


def test_gemini_3_pro_chat_against_the_emulator(gateway: Gateway, tmp_path: Path) -> None:
    transport = Recording(httpx.HTTPTransport())
    with Client(gateway.key, base_url=gateway.url, transport=transport) as client:
        chat = client.chat(model=PRO, aspect_ratio="1:1", image_size="1K")
        first = chat.send("A red bicycle leaning on a wall")
        signatures = [p.get("thoughtSignature") for p in first.raw["candidates"][0]["content"]["parts"]]
        assert any(signatures), "the emulator signs Gemini 3 answers"
        # What the client would send next, inspected before sending...
        planned, _ = chat.build_request("Make the bicycle blue")
        second = chat.send("Make the bicycle blue")
    assert planned.body["contents"][1] == first.raw["candidates"][0]["content"]
    # ...and what it did send.
    sent = transport.requests[1]["contents"]
    assert sent[1] == first.raw["candidates"][0]["content"]
    assert [p.get("thoughtSignature") for p in sent[1]["parts"]] == signatures
    assert second.image is not None and second.image.size == (1024, 1024)
    assert len(chat.history) == 4


def test_blocked_turn_is_dropped_text_turn_is_kept() -> None:
    replies = iter(
        [
            {"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY"}]},
            {"candidates": [{"content": {"parts": [{"text": "Which colour?"}]}, "finishReason": "STOP"}]},
        ]
    )
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=next(replies)))
    with Client("k", base_url="http://gw", transport=transport) as client:
        chat = client.chat(model=PRO)
        with pytest.raises(NoImageError):
            chat.send("something blocked")
        assert chat.history == []
        with pytest.raises(NoImageError):
            chat.send("paint it")
    assert [c["role"] for c in chat.history] == ["user", "model"]
    assert chat.history[1]["parts"] == [{"text": "Which colour?"}]


async def test_async_chat(gateway: Gateway) -> None:
    async with AsyncClient(gateway.key, base_url=gateway.url) as aclient:
        chat = aclient.chat(model="gemini-3.1-flash-image-preview", image_size="512")
        first = await chat.send("A teapot")
        await chat.send("Add steam")
    assert chat.history[1] == {**first.content, "role": "model"}
