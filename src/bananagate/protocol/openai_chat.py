"""Chat completions (protocol reference §8.3) on top of Gemini `generateContent`: the request
becomes Gemini contents, the answer a `chat.completion` (or a run of `chat.completion.chunk`s).

Output images follow the OpenRouter / LiteLLM convention: `message.images[]` entries
`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`, text in `content`.
Remote `image_url`s are left as Gemini `fileData` parts for the server to fetch and inline: this
module does no I/O.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any

from bananagate.protocol import base64codec
from bananagate.protocol.catalog import INPUT_IMAGE_MIME_TYPES, ImageModel
from bananagate.protocol.openai_wire import FILTER_REASONS, GeminiResult, bad_request
from bananagate.protocol.response import Usage


@dataclass(frozen=True, slots=True)
class ChatParams:
    model: ImageModel
    model_id: str
    stream: bool
    include_usage: bool
    gemini: dict[str, Any]  # the generateContent body; http(s) images still as fileData


def chat_request(body: dict[str, Any], model: ImageModel, model_id: str) -> ChatParams:
    """Validate an OpenAI chat request and translate it; raises OpenAIError(400)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", "messages", "invalid_value")
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request(
            "'n' must be 1 here: Gemini image models answer one candidate per call "
            "(use /v1/images/generations with n for several images).",
            "n",
            "invalid_value",
        )
    if body.get("tools") or body.get("functions"):
        raise bad_request("Gemini image models do not support tools or functions.", "tools", "unsupported")
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object.", where, "invalid_type")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(p for p in _parts(message.get("content"), where) if "text" in p)
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"), where)})
        elif role == "assistant":
            parts = _parts(message.get("content"), where)
            # Earlier image answers come back as `images` (our own output convention): keep them
            # in the model turn so that "now make it blue" edits the right picture.
            for j, image in enumerate(message.get("images") or []):
                parts.append(_image_part(image, f"{where}.images[{j}]"))
            contents.append({"role": "model", "parts": parts})
        else:
            raise bad_request(
                f"{where}.role {role!r} is not supported (use system, developer, user or assistant).",
                f"{where}.role",
                "invalid_value",
            )
    contents = [c for c in contents if c["parts"]]
    if not any(c["role"] == "user" for c in contents):
        raise bad_request("At least one user message with content is required.", "messages", "invalid_value")
    gemini: dict[str, Any] = {"contents": contents, "generationConfig": _generation_config(body, model)}
    if system:
        gemini["systemInstruction"] = {"parts": system}
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return ChatParams(model, model_id, bool(body.get("stream")), include_usage, gemini)


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of parts.", f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, item in enumerate(content):
        path = f"{where}.content[{j}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            if item["text"]:
                parts.append({"text": item["text"]})
        elif kind == "image_url":
            parts.append(_image_part(item, path))
        else:
            raise bad_request(
                f"{path}: unsupported content part {kind!r} (expected 'text' or 'image_url').",
                path,
                "invalid_value",
            )
    return parts


def _image_part(item: Any, path: str) -> dict[str, Any]:
    """`{"type": "image_url", "image_url": {"url": ...}}` (or the url as a plain string) -> a Part."""
    ref = item.get("image_url") if isinstance(item, dict) else None
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise bad_request(f"{path}.image_url.url is required.", f"{path}.image_url", "invalid_value")
    if url.startswith("data:"):
        mime, data = parse_data_url(url, f"{path}.image_url.url")
        return {"inlineData": {"mimeType": mime, "data": data}}
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        # A placeholder type; the fetcher replaces it with what the bytes really are.
        guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
        mime = guessed if guessed in INPUT_IMAGE_MIME_TYPES else "image/png"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise bad_request(
        f"{path}.image_url.url: unsupported URL scheme {scheme!r} (expected data:, http: or https:).",
        f"{path}.image_url",
        "invalid_image_url",
    )


def parse_data_url(url: str, param: str) -> tuple[str, str]:
    """`data:image/png;base64,....` -> (MIME type, canonical Base64); raises OpenAIError(400)."""
    header, sep, data = url[len("data:") :].partition(",")
    params = header.split(";")
    mime = params[0].strip().lower()
    if not sep or "base64" not in (p.strip().lower() for p in params[1:]):
        raise bad_request(
            f"{param}: expected a Base64 data URL (data:image/png;base64,...).", param, "invalid_image_url"
        )
    if mime not in INPUT_IMAGE_MIME_TYPES:
        raise bad_request(
            f"{param}: unsupported image type {mime or '(none)'!r}; "
            f"supported: {', '.join(sorted(INPUT_IMAGE_MIME_TYPES))}.",
            param,
            "invalid_image_format",
        )
    text = "".join(data.split())
    if not text or not base64codec.is_valid_base64(text):
        raise bad_request(f"{param}: the data URL is not valid Base64.", param, "invalid_image_url")
    return mime, base64codec.canonical(text)


def _generation_config(body: dict[str, Any], model: ImageModel) -> dict[str, Any]:
    config: dict[str, Any] = {}
    modalities = body.get("modalities")
    if modalities is not None:
        if not isinstance(modalities, list) or not all(m in ("text", "image") for m in modalities):
            raise bad_request("'modalities' must list 'text' and/or 'image'.", "modalities", "invalid_value")
        config["responseModalities"] = [m.upper() for m in modalities]
    simple = {"temperature": "temperature", "top_p": "topP", "seed": "seed"}
    simple |= {"presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
    for name, gemini_name in simple.items():
        if body.get(name) is not None:
            config[gemini_name] = body[name]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    # OpenRouter's `image_config`, or LiteLLM-style `google.image_config` (extra_body), snake_case.
    google = body.get("google")
    image_config = body.get("image_config") or (
        google.get("image_config") if isinstance(google, dict) else None
    )
    if image_config is not None:
        if not isinstance(image_config, dict):
            raise bad_request("'image_config' must be an object.", "image_config", "invalid_type")
        ratio = image_config.get("aspect_ratio", image_config.get("aspectRatio"))
        size = image_config.get("image_size", image_config.get("imageSize"))
        config["imageConfig"] = {
            k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v is not None
        }
    return config


# --- answers ---------------------------------------------------------------------------------------------


def finish_reason(result: GeminiResult) -> str:
    """Gemini finishReason -> OpenAI finish_reason."""
    if result.block_reason is not None or (result.finish_reason or "") in FILTER_REASONS:
        return "content_filter"
    if result.finish_reason == "MAX_TOKENS":
        return "length"
    return "stop"


def chat_usage(usage: Usage) -> dict[str, Any]:
    """`usage` of a chat answer; completion tokens include thinking, which Google bills as output."""
    completion = usage.candidates_tokens + usage.thoughts_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": usage.prompt_tokens + completion,
        "prompt_tokens_details": {
            "text_tokens": usage.prompt_tokens - usage.prompt_image_tokens,
            "image_tokens": usage.prompt_image_tokens,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.thoughts_tokens,
            "text_tokens": usage.candidates_tokens - usage.candidates_image_tokens,
            "image_tokens": usage.candidates_image_tokens,
        },
    }


def _refusal(result: GeminiResult) -> str:
    if result.block_reason is not None:
        return f"The prompt was blocked (blockReason {result.block_reason})."
    return result.finish_message or f"The output was withheld (finishReason {result.finish_reason})."


def _images(result: GeminiResult) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": image.data_url()}} for image in result.images]


def chat_completion(
    result: GeminiResult, *, completion_id: str, created: int, model_id: str
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.images:
        message["images"] = _images(result)
    if result.reasoning:
        message["reasoning"] = result.reasoning
    reason = finish_reason(result)
    if reason == "content_filter":
        message["refusal"] = _refusal(result)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": chat_usage(result.usage),
    }


@dataclass(slots=True)
class ChatStream:
    """Turns Gemini stream events into `chat.completion.chunk` objects, one call per event."""

    completion_id: str
    created: int
    model_id: str
    include_usage: bool
    _started: bool = False
    _last: GeminiResult = field(default_factory=GeminiResult)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def event(self, result: GeminiResult) -> list[dict[str, Any]]:
        """The chunks for one Gemini event (its text and images are deltas already)."""
        chunks: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}))
        delta: dict[str, Any] = {}
        if result.reasoning:
            delta["reasoning"] = result.reasoning
        if result.text:
            delta["content"] = result.text
        if result.images:
            # A Gemini image arrives whole in one event; it goes out whole in one delta.
            delta["images"] = _images(result)
        if delta:
            chunks.append(self._chunk(delta))
        # Usage is cumulative in every event; the finish arrives with the last one.
        self._last = GeminiResult(
            finish_reason=result.finish_reason or self._last.finish_reason,
            finish_message=result.finish_message or self._last.finish_message,
            block_reason=result.block_reason or self._last.block_reason,
            usage=result.usage,
        )
        return chunks

    def finish(self) -> list[dict[str, Any]]:
        """The closing chunks: finish_reason, then usage.

        With `stream_options.include_usage` the usage goes in an extra chunk with no choices, as
        OpenAI does; otherwise it rides on the finish chunk (as OpenRouter does), so it is there
        for clients that never ask.
        """
        chunks = [] if self._started else self.event(GeminiResult())
        reason = finish_reason(self._last)
        delta: dict[str, Any] = {"refusal": _refusal(self._last)} if reason == "content_filter" else {}
        last = self._chunk(delta, reason)
        usage = chat_usage(self._last.usage)
        if self.include_usage:
            chunks.append(last)
            chunks.append({**self._chunk({}), "choices": [], "usage": usage})
        else:
            chunks.append({**last, "usage": usage})
        return chunks
