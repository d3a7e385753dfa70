"""From request bytes to a validated `GenerateContentRequest`, or an `ApiError` worded like Google's
(protocol reference §3.6, §5.3, §9.4)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from bananagate.protocol import base64codec
from bananagate.protocol.catalog import INPUT_IMAGE_MIME_TYPES, ImageModel
from bananagate.protocol.errors import ApiError, FieldViolation, invalid_argument
from bananagate.protocol.lean import is_strict_base64, lean_spans, skeleton_of
from bananagate.protocol.scan import Bytes
from bananagate.protocol.wire import Content, GenerateContentRequest

_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")

# pydantic error type -> the proto type Google names in "Invalid value at ... (TYPE_X)".
_PROTO_TYPES = {
    "int_type": "TYPE_INT32",
    "int_parsing": "TYPE_INT32",
    "int_from_float": "TYPE_INT32",
    "float_type": "TYPE_FLOAT",
    "float_parsing": "TYPE_FLOAT",
    "bool_type": "TYPE_BOOL",
    "bool_parsing": "TYPE_BOOL",
    "string_type": "TYPE_STRING",
    "list_type": "list",
    "model_type": "message",
    "model_attributes_type": "message",
    "dict_type": "message",
}

_QUOTED_LIMIT = 60


def snake(name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic location -> Google's field path: snake_case names, 0-based `[i]` indices."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += ("." if out else "") + snake(item)
    return out


def _quote(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if len(text) > _QUOTED_LIMIT:
        text = text[:_QUOTED_LIMIT] + "..."
    return '"' + text.replace('"', '\\"') + '"'


def load_json_object(body: Bytes) -> dict[str, Any]:
    """Parse a JSON request body that must be an object."""
    if not body or body.isspace():  # (a bytearray's strip() would copy a 21 MB body)
        raise invalid_argument("Invalid JSON payload received. Empty request body.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_argument(f"Invalid JSON payload received. {exc}") from None
    if not isinstance(data, dict):
        raise invalid_argument(
            'Invalid JSON payload received. Unknown name "": Root element must be a message.'
        )
    return data


def parse_generate_request(data: dict[str, Any]) -> GenerateContentRequest:
    """Validate shapes and types of a parsed body (no model-specific rules)."""
    try:
        return GenerateContentRequest.model_validate(data)
    except ValidationError as exc:
        violations = []
        for err in exc.errors(include_url=False):
            path = field_path(tuple(err["loc"]))
            proto_type = _PROTO_TYPES.get(err["type"])
            if proto_type:
                desc = f"Invalid value at '{path}' ({proto_type}), {_quote(err.get('input'))}"
            else:
                desc = f"Invalid value at '{path}': {err['msg']}"
            violations.append(FieldViolation(path, desc))
        raise invalid_argument("\n".join(v.description for v in violations), violations) from None


def check_for_model(request: GenerateContentRequest, model: ImageModel) -> None:
    """The rules a Gemini image model applies before generating; raises ApiError(400)."""
    if not request.contents:
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified\n")

    # Google's own words for `system`, `assistant`, `function`, ...: only two roles exist.
    if any((content.role or "user").lower() not in ("user", "model") for content in request.contents):
        raise invalid_argument("Please use a valid role: user, model.")

    violations: list[FieldViolation] = []
    for ci, content in enumerate(request.contents):
        if not content.parts:
            path = f"contents[{ci}].parts"
            violations.append(
                FieldViolation(path, f"* GenerateContentRequest.{path}: contents.parts must not be empty.")
            )
        for pi, part in enumerate(content.parts):
            base = f"contents[{ci}].parts[{pi}]"
            if not part.has_data():
                violations.append(
                    FieldViolation(
                        f"{base}.data",
                        f"* GenerateContentRequest.{base}.data: "
                        "required oneof field 'data' must have one initialized field",
                    )
                )
            if part.inline_data is not None:
                _check_bytes(part.inline_data.data, f"{base}.inline_data.data", violations)
            if part.thought_signature is not None:
                _check_bytes(part.thought_signature, f"{base}.thought_signature", violations)
    if violations:
        raise invalid_argument("\n".join(v.description for v in violations), violations)

    images = request.input_images()
    for image in images:
        mime = image.mime_type.lower()
        if not mime:
            raise invalid_argument(
                f"* GenerateContentRequest.{image.path}.mime_type: mime_type is not specified.",
                [FieldViolation(f"{image.path}.mime_type", "mime_type is not specified")],
            )
        if mime not in INPUT_IMAGE_MIME_TYPES:
            raise invalid_argument(
                f"Unsupported MIME type: {image.mime_type}",
                [FieldViolation(f"{image.path}.mime_type", f"Unsupported MIME type: {image.mime_type}")],
            )
        # Lean parsing left `data` empty but checked it in the body: non-empty, valid Base64.
        if image.data is not None and not image.data.strip() and not request.elided_spans:
            raise invalid_argument(f"* GenerateContentRequest.{image.path}.data: data is empty.")
    if len(images) > model.max_input_images:
        raise invalid_argument(
            f"Too many input images: {len(images)}. {model.id} accepts at most "
            f"{model.max_input_images} images per request."
        )

    gc = request.generation_config
    if gc is not None:
        if gc.candidate_count is not None and gc.candidate_count > 1:
            target = f"models/{model.id}" if model.version.startswith("2") else "this model"
            raise invalid_argument(f"Multiple candidates is not enabled for {target}")
        if gc.candidate_count is not None and gc.candidate_count < 0:
            raise invalid_argument("* GenerationConfig.candidate_count: must be positive.")
    ratio = request.aspect_ratio
    if ratio is not None and ratio not in model.sizes:
        raise invalid_argument(
            f"Unsupported aspect ratio: {ratio!r} for {model.id}. "
            f"Supported: {', '.join(model.aspect_ratios)}.",
            [FieldViolation("generation_config.image_config.aspect_ratio", f"Unsupported: {ratio}")],
        )
    size = request.image_size
    if size is not None and size not in model.image_tokens:
        raise invalid_argument(
            f"Unsupported image size: {size!r} for {model.id}. "
            f"Supported: {', '.join(model.image_sizes)} (uppercase K).",
            [FieldViolation("generation_config.image_config.image_size", f"Unsupported: {size}")],
        )


def _check_bytes(value: str | None, path: str, violations: list[FieldViolation]) -> None:
    if value is None:
        return
    text = value
    if base64codec.has_whitespace(text):
        text = "".join(text.split())
    if not base64codec.is_valid_base64(text):
        violations.append(
            FieldViolation(
                path,
                f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {_quote(value)}",
            )
        )


def lean_request(body: Bytes) -> GenerateContentRequest | None:
    """The request parsed without its inline images' Base64 (protocol/lean.py), whose spans it
    carries in `elided_spans`; None when only a full parse can read this body exactly."""
    spans = lean_spans(body)
    if spans is None:
        return None
    skeleton = skeleton_of(body, spans)
    if skeleton is None:
        return None
    try:
        data = orjson.loads(skeleton)
        request = GenerateContentRequest.model_validate(data) if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, ValidationError):
        return None
    if request is None or _has_inline_data(request.system_instruction):
        return None  # system_instruction's place in the body is unknown: spans map to contents only
    blobs = [p.inline_data for c in request.contents for p in c.parts if p.inline_data is not None]
    if len(blobs) != len(spans) or any(blob.data != "" for blob in blobs):
        return None
    if not all(is_strict_base64(body, span) for span in spans):
        return None
    request._elided = tuple(spans)
    return request


def _has_inline_data(content: Content | None) -> bool:
    return content is not None and any(part.inline_data is not None for part in content.parts)


def parse_and_check(body: Bytes, model: ImageModel, *, lean: bool = False) -> GenerateContentRequest:
    """Everything the gateway checks before a call: JSON, shapes, then the model's rules.

    With `lean`, a big body's image Base64 is checked in place instead of being parsed into
    strings (the request's `elided_spans` say where it is); the answer is the same either way.
    """
    request = lean_request(body) if lean else None
    if request is None:
        request = parse_generate_request(load_json_object(body))
    check_for_model(request, model)
    return request


__all__ = [
    "ApiError",
    "check_for_model",
    "field_path",
    "load_json_object",
    "parse_and_check",
    "parse_generate_request",
]
