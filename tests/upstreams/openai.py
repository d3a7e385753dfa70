"""Fake OpenAI Images API: `/v1/images/generations` (JSON) and `/v1/images/edits` (multipart),
Bearer auth and the OpenAI error envelope (protocol reference §8)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import orjson

from tests.upstreams.gemini import png
from tests.upstreams.server import AnyReply, FakeUpstream, Recorded, Reply


def openai_error(
    status: int, message: str, type_: str = "invalid_request_error", code: str | None = None
) -> Reply:
    return Reply(
        status, orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    )


def images_answer(image: bytes, *, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(image).decode()}],
    }
    if usage:
        body["usage"] = {
            "input_tokens": 12,
            "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
            "output_tokens": 1056,
            "total_tokens": 1068,
        }
    body["output_format"] = "png"
    return body


@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[FormPart]:
    """The parts of a multipart/form-data body, in order (repeated names kept)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = []
    for part in message.iter_parts():
        parts.append(
            FormPart(
                name=part.get_param("name", header="content-disposition"),
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                data=part.get_payload(decode=True),
            )
        )
    return parts


class FakeOpenAI(FakeUpstream):
    """`Authorization: Bearer sk-...`; missing or wrong → 401 with OpenAI's wording (masked key)."""

    def __init__(
        self,
        keys: list[str] | tuple[str, ...],
        name: str = "openai",
        colour: tuple[int, int, int] = (40, 40, 220),
    ) -> None:
        super().__init__(name, keys)
        self.image = png(colour)

    def authenticate(self, request: Recorded) -> Reply | None:
        auth = request.header("authorization") or ""
        if not auth.lower().startswith("bearer "):
            return openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = auth[7:]
        if key not in self.keys:
            masked = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}"
            message = f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
            return openai_error(401, message, code="invalid_api_key")
        return None

    def normal_reply(self, request: Recorded) -> AnyReply:
        if request.method == "POST" and request.path in ("/v1/images/generations", "/v1/images/edits"):
            return Reply(200, orjson.dumps(images_answer(self.image)))
        return openai_error(404, f"Invalid URL ({request.method} {request.path})")

    def form(self, request: Recorded) -> list[FormPart]:
        return parse_multipart(request.body, request.header("content-type") or "")
