"""Fake Google Gemini API and fake CometAPI (Gemini-native routes), with their real auth rules
(protocol reference §2) and error shapes (§5)."""

from __future__ import annotations

import base64
import io
import itertools
from typing import Any

import orjson
from PIL import Image

from tests.upstreams.server import AnyReply, FakeUpstream, Recorded, Reply, StreamReply

_ids = itertools.count(1)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def usage(image_tokens: int = 1290, prompt: int = 7) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": image_tokens,
        "totalTokenCount": prompt + image_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_tokens}],
    }


def gemini_answer(
    model: str, image: bytes, *, text: str | None = None, mime: str = "image/png"
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts.append({"inlineData": {"mimeType": mime, "data": base64.b64encode(image).decode()}})
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage(),
        "modelVersion": model,
        "responseId": f"resp-{next(_ids)}",
    }


def google_error(
    code: int,
    message: str = "The model is overloaded. Please try again later.",
    status: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    names = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
    names |= {500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 401: "UNAUTHENTICATED"}
    error: dict[str, Any] = {"code": code, "message": message, "status": status or names.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    body = orjson.dumps({"error": error}, option=orjson.OPT_INDENT_2)
    return Reply(code, body, headers or {})


def rate_limited(retry_delay: str = "2s") -> Reply:
    """Google's free-tier 429: QuotaFailure, Help, RetryInfo (in that order, §5.4)."""
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "m"}]},
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "d", "url": "u"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ]
    message = "You exceeded your current quota, please check your plan and billing details."
    return google_error(429, message, details=details)


def sse_events(model: str, image: bytes, text: str) -> list[bytes]:
    first = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
        "modelVersion": model,
        "responseId": "stream-1",
    }
    last = gemini_answer(model, image)
    last["responseId"] = "stream-1"
    return [orjson.dumps(first), orjson.dumps(last)]


class GeminiLike(FakeUpstream):
    """Gemini-native routes: `POST /v1beta/models/{model}:generateContent|streamGenerateContent`.

    The normal answer carries this upstream's own image (`self.image`, a PNG of its colour) and
    the text `served by <name>`, so a test can tell who answered.
    """

    def __init__(self, name: str, keys: list[str] | tuple[str, ...], colour: tuple[int, int, int]) -> None:
        super().__init__(name, keys)
        self.image = png(colour)

    @staticmethod
    def model_of(request: Recorded) -> str:
        resource = request.path.rsplit("/models/", 1)[-1]
        return resource.split(":", 1)[0]

    def normal_reply(self, request: Recorded) -> AnyReply:
        model = self.model_of(request)
        if request.path.endswith(":streamGenerateContent"):
            events = sse_events(model, self.image, f"served by {self.name}")
            if request.query.get("alt") == "sse":
                return StreamReply(events)
            return Reply(200, b"[" + b",\r\n".join(events) + b"]")
        if request.path.endswith(":generateContent"):
            body = gemini_answer(model, self.image, text=f"served by {self.name}")
            return Reply(200, orjson.dumps(body, option=orjson.OPT_INDENT_2))
        return google_error(404, f"Method not found: {request.path}", "NOT_FOUND")


class FakeGoogle(GeminiLike):
    """`x-goog-api-key` or `?key=`; no key → 403; a wrong key → 400 API_KEY_INVALID; any Bearer → 401."""

    def __init__(
        self,
        keys: list[str] | tuple[str, ...],
        name: str = "google",
        colour: tuple[int, int, int] = (20, 160, 40),
    ) -> None:
        super().__init__(name, keys, colour)

    def authenticate(self, request: Recorded) -> Reply | None:
        if (request.header("authorization") or "").lower().startswith("bearer"):
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential."
            )
            reply = google_error(401, message, "UNAUTHENTICATED")
            reply.headers["www-authenticate"] = 'Bearer realm="https://accounts.google.com/"'
            return reply
        key = request.header("x-goog-api-key") or request.query.get("key")
        if key is None:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API."
            )
            return google_error(403, message, "PERMISSION_DENIED")
        if key not in self.keys:
            message = "API key not valid. Please pass a valid API key."
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": message,
                },
            ]
            return google_error(400, message, "INVALID_ARGUMENT", details)
        return None


def comet_error(status: int, message: str, code: str = "") -> Reply:
    """CometAPI's OpenAI/new-api style envelope (§5.6), request id in the message."""
    body = {
        "error": {
            "message": f"{message} (request id: 2026{next(_ids):08d})",
            "type": "comet_api_error",
            "param": "",
            "code": code,
        }
    }
    return Reply(status, orjson.dumps(body))


class FakeComet(GeminiLike):
    """`Authorization: sk-...` (raw) or `Bearer sk-...`; also `x-goog-api-key` / `?key=`. Else 401."""

    def __init__(
        self,
        keys: list[str] | tuple[str, ...],
        name: str = "comet",
        colour: tuple[int, int, int] = (200, 120, 0),
    ) -> None:
        super().__init__(name, keys, colour)

    def authenticate(self, request: Recorded) -> Reply | None:
        auth = request.header("authorization") or ""
        key = auth[7:] if auth.lower().startswith("bearer ") else auth
        key = key or request.header("x-goog-api-key") or request.query.get("key") or ""
        if key not in self.keys:
            return comet_error(401, "Invalid token" if key else "Unauthorized: no token provided")
        return None
