"""OpenAI shapes on top of Gemini (protocol reference §8): error envelope, reading a Gemini answer,
and the Images API (`/v1/images/generations`, `/v1/images/edits`) request and response.

Pure conversions, no I/O: the server reads bodies, calls upstream and stores files; this module
only turns one dict into another. Chat completions live in `openai_chat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bananagate.protocol import base64codec
from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import ApiError
from bananagate.protocol.openai_sizes import SizeChoice, SizeError, resolve_size
from bananagate.protocol.response import Usage

# --- errors ----------------------------------------------------------------------------------------


class OpenAIError(ApiError):
    """An error whose OpenAI envelope fields are known exactly (`param`, `type`, `code`).

    It is still an ApiError, so code that only knows Google's envelope renders it too.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code, message, headers=headers)
        self.param = param
        self.error_type = error_type
        self.error_code = error_code


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, error_type="invalid_request_error", error_code=code)


# HTTP status -> (OpenAI `type`, OpenAI `code`) for errors that did not say more themselves.
_BY_STATUS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    # OpenAI answers a bad key with type invalid_request_error and code invalid_api_key.
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


# `ErrorInfo.reason` of the Authenticator's 401s -> OpenAI's codes for them.
_KEY_REASONS = {
    "CREDENTIALS_MISSING": "missing_api_key",
    "API_KEY_INVALID": "invalid_api_key",
    "API_KEY_EXPIRED": "expired_api_key",
}
MISSING_KEY_MESSAGE = "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'."


def error_envelope(error: ApiError) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` for any gateway error."""
    default_type, default_code = _BY_STATUS.get(
        error.code, ("server_error" if error.code >= 500 else "invalid_request_error", None)
    )
    if isinstance(error, OpenAIError):
        body = {
            "message": error.message,
            "type": error.error_type or default_type,
            "param": error.param,
            "code": error.error_code or default_code,
        }
        return {"error": body}
    message = error.message
    # The Google status name is the most precise thing we know about a translated error.
    code = default_code or error.status.lower()
    reason = _reason(error)
    if error.code == 404 and "is not found for API version" in message:
        code = "model_not_found"
    elif error.code == 401 and reason in _KEY_REASONS:
        code = _KEY_REASONS[reason]
        if reason == "CREDENTIALS_MISSING":
            message = MISSING_KEY_MESSAGE
    return {"error": {"message": message, "type": default_type, "param": None, "code": code}}


def _reason(error: ApiError) -> str | None:
    for detail in error.details:
        reason = detail.get("reason")
        if isinstance(reason, str):
            return reason
    return None


# --- reading a Gemini answer ---------------------------------------------------------------------------

# finishReason values that mean "the output was withheld for policy reasons" (§4.2).
FILTER_REASONS: frozenset[str] = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


@dataclass(slots=True)
class OutputImage:
    mime_type: str
    data: str  # standard padded Base64, as Gemini sends it

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{self.data}"


@dataclass(slots=True)
class GeminiResult:
    """What an OpenAI answer needs from one `GenerateContentResponse` (or one stream event)."""

    images: list[OutputImage] = field(default_factory=list)
    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    finish_message: str | None = None
    block_reason: str | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def filtered(self) -> bool:
        return self.block_reason is not None or (self.finish_reason or "") in FILTER_REASONS


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def read_gemini(data: dict[str, Any]) -> GeminiResult:
    """Images, text and finish of the first candidate, in either casing; thought parts are kept
    apart (thought text as `reasoning`, interim thought images dropped)."""
    result = GeminiResult(usage=Usage.from_wire(_get(data, "usageMetadata", "usage_metadata")))
    feedback = _get(data, "promptFeedback", "prompt_feedback")
    if isinstance(feedback, dict):
        reason = _get(feedback, "blockReason", "block_reason")
        result.block_reason = str(reason) if reason else None
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return result
    candidate = candidates[0]
    reason = _get(candidate, "finishReason", "finish_reason")
    result.finish_reason = str(reason) if reason else None
    message = _get(candidate, "finishMessage", "finish_message")
    result.finish_message = str(message) if message else None
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        thought = bool(part.get("thought"))
        blob = _get(part, "inlineData", "inline_data")
        if isinstance(blob, dict) and not thought:
            mime = str(_get(blob, "mimeType", "mime_type") or "image/png")
            result.images.append(OutputImage(mime, base64codec.canonical(str(blob.get("data") or ""))))
        elif isinstance(part.get("text"), str):
            (thoughts if thought else texts).append(part["text"])
    result.text = "".join(texts)
    result.reasoning = "".join(thoughts)
    return result


def no_image_error(result: GeminiResult) -> OpenAIError:
    """Why an answer carries no image, as the error an Images API client gets for it."""
    if result.block_reason is not None:
        return bad_request(
            f"The prompt was blocked by the model's safety system (blockReason {result.block_reason}).",
            param="prompt",
            code="content_policy_violation",
        )
    detail = f" {result.finish_message}" if result.finish_message else ""
    if result.filtered:
        return bad_request(
            f"The image was withheld by the model's safety system "
            f"(finishReason {result.finish_reason}).{detail}",
            param="prompt",
            code="content_policy_violation",
        )
    said = f' The model said: "{result.text[:300]}"' if result.text else ""
    # The model answered but drew nothing: not the client's fault, and a retry may draw.
    return OpenAIError(
        502,
        f"The model returned no image (finishReason {result.finish_reason or 'none'}).{detail}{said}",
        error_type="server_error",
        error_code="no_image",
    )


# --- Images API ----------------------------------------------------------------------------------------

MAX_N = 10  # OpenAI's own bound on `n`
RESPONSE_FORMATS = ("b64_json", "url")
# Accepted so that clients written for DALL-E / gpt-image work; Gemini has no such knobs.
QUALITIES = ("auto", "low", "medium", "high", "standard", "hd", "xhigh", "max")
STYLES = ("vivid", "natural")


@dataclass(frozen=True, slots=True)
class ImagesParams:
    """The validated fields of an images request (generation or edit)."""

    model: ImageModel
    model_id: str
    prompt: str
    n: int
    size: SizeChoice
    response_format: str


def parse_images_params(fields: dict[str, Any], model: ImageModel, model_id: str) -> ImagesParams:
    """Validate the fields common to generations and edits (JSON values or form strings)."""
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_request("'prompt' is required and must be a non-empty string.", "prompt", "missing_prompt")
    n = _integer(fields.get("n", 1), "n")
    if not 1 <= n <= MAX_N:
        raise bad_request(f"'n' must be between 1 and {MAX_N}, got {n}.", "n", "invalid_value")
    response_format = fields.get("response_format") or "b64_json"
    if response_format not in RESPONSE_FORMATS:
        raise bad_request(
            f"Invalid response_format {response_format!r}: expected 'b64_json' or 'url'.",
            "response_format",
            "invalid_value",
        )
    quality = fields.get("quality")
    if quality is not None and quality not in QUALITIES:
        raise bad_request(
            f"Invalid quality {quality!r}: expected one of {', '.join(QUALITIES)}.",
            "quality",
            "invalid_value",
        )
    style = fields.get("style")
    if style is not None and style not in STYLES:
        raise bad_request(
            f"Invalid style {style!r}: expected 'vivid' or 'natural'.", "style", "invalid_value"
        )
    size = fields.get("size")
    if size is not None and not isinstance(size, str):
        raise bad_request("'size' must be a string such as '1024x1024'.", "size", "invalid_value")
    try:
        choice = resolve_size(size, model)
    except SizeError as exc:
        raise bad_request(str(exc), "size", "invalid_size") from None
    return ImagesParams(model, model_id, prompt, n, choice, str(response_format))


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise bad_request(f"'{name}' must be an integer.", name, "invalid_type")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise bad_request(f"'{name}' must be an integer.", name, "invalid_type")


@dataclass(frozen=True, slots=True)
class InputImage:
    mime_type: str
    data: bytes


def images_request(params: ImagesParams, images: list[InputImage] | None = None) -> dict[str, Any]:
    """The Gemini `generateContent` body for one image of an images request.

    The prompt comes first, then the input images (Google's own edit samples use this order);
    only IMAGE is asked for, since the Images API has nowhere to put the model's text.
    """
    parts: list[dict[str, Any]] = [{"text": params.prompt}]
    for image in images or []:
        parts.append({"inlineData": {"mimeType": image.mime_type, "data": base64codec.encode(image.data)}})
    config: dict[str, Any] = {"responseModalities": ["IMAGE"]}
    image_config = params.size.image_config(params.model)
    if image_config:
        config["imageConfig"] = image_config
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


def images_usage(usages: list[Usage]) -> dict[str, Any]:
    """gpt-image's `usage` block, summed over the calls that produced the images.

    Output tokens include thinking tokens: Google bills them as output.
    """
    prompt = sum(u.prompt_tokens for u in usages)
    prompt_images = sum(u.prompt_image_tokens for u in usages)
    out_images = sum(u.candidates_image_tokens for u in usages)
    output = sum(u.candidates_tokens + u.thoughts_tokens for u in usages)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"text_tokens": prompt - prompt_images, "image_tokens": prompt_images},
        "output_tokens": output,
        "output_tokens_details": {"text_tokens": output - out_images, "image_tokens": out_images},
        "total_tokens": prompt + output,
    }


OUTPUT_FORMATS: dict[str, str] = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def failure_entry(index: int, error: ApiError) -> dict[str, Any]:
    """One entry of the `errors` list of a partially failed images answer."""
    return {"index": index, "status": error.code, **error_envelope(error)["error"]}
