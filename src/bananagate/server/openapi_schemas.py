"""JSON schemas of the wire objects the OpenAPI description refers to (see `openapi`)."""

from __future__ import annotations

from typing import Any

from bananagate.protocol.catalog import INPUT_IMAGE_MIME_TYPES, MODELS
from bananagate.protocol.openai_wire import MAX_N, QUALITIES, RESPONSE_FORMATS, STYLES


def _json(schema: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_MODEL_IDS = [m.id for m in MODELS]
_RATIOS = sorted({r for m in MODELS for r in m.aspect_ratios})
_SIZES = sorted({s for m in MODELS for s in m.image_sizes})

_GOOGLE_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "status"],
            "properties": {
                "code": {"type": "integer", "minimum": 400, "maximum": 599},
                "message": {"type": "string"},
                "status": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}
_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


# One server-sent event (as schemathesis and EventSource see it): `data` holds a JSON document.
_SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_GOOGLE_DEFAULT = {"description": "An error in Google's envelope", **_json(_ref("GoogleError"))}
_OPENAI_DEFAULT = {"description": "An error in OpenAI's envelope", **_json(_ref("OpenAIError"))}
_EITHER_DEFAULT = {
    "description": "An error: Google's envelope for Gemini-style callers, OpenAI's for the others",
    **_json({"anyOf": [_ref("GoogleError"), _ref("OpenAIError")]}),
}

_BLOB = {
    "type": "object",
    "properties": {
        "mimeType": {"enum": sorted(INPUT_IMAGE_MIME_TYPES)},
        "data": {"type": "string", "contentEncoding": "base64", "description": "Base64, no data: prefix"},
    },
}
_PART = {
    "type": "object",
    "description": "One of text / inlineData (snake_case names are accepted too).",
    "properties": {
        "text": {"type": "string"},
        "inlineData": _BLOB,
        "thought": {"type": "boolean"},
        "thoughtSignature": {"type": "string", "contentEncoding": "base64"},
    },
}
_CONTENT = {
    "type": "object",
    "properties": {"role": {"enum": ["user", "model"]}, "parts": {"type": "array", "items": _ref("Part")}},
}
_GENERATE_REQUEST = {
    "type": "object",
    "required": ["contents"],
    "properties": {
        "contents": {"type": "array", "items": _ref("Content")},
        "systemInstruction": _ref("Content"),
        "generationConfig": {
            "type": "object",
            "properties": {
                "responseModalities": {"type": "array", "items": {"enum": ["TEXT", "IMAGE"]}},
                "imageConfig": {
                    "type": "object",
                    "properties": {"aspectRatio": {"enum": _RATIOS}, "imageSize": {"enum": _SIZES}},
                },
                "candidateCount": {"type": "integer"},
                "temperature": {"type": "number"},
                "topP": {"type": "number"},
                "seed": {"type": "integer"},
                "maxOutputTokens": {"type": "integer"},
            },
        },
        "safetySettings": {"type": "array", "items": {"type": "object"}},
    },
    "examples": [{"contents": [{"parts": [{"text": "A banana wearing sunglasses"}]}]}],
}
_GENERATE_RESPONSE = {
    "type": "object",
    "description": "Google's GenerateContentResponse, as the upstream sent it.",
    "properties": {
        "candidates": {"type": "array", "items": {"type": "object"}},
        "promptFeedback": {"type": "object"},
        "usageMetadata": {"type": "object"},
        "modelVersion": {"type": "string"},
        "responseId": {"type": "string"},
    },
}
_MODEL = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "baseModelId": {"type": "string"},
        "version": {"type": "string"},
        "displayName": {"type": "string"},
        "description": {"type": "string"},
        "inputTokenLimit": {"type": "integer"},
        "outputTokenLimit": {"type": "integer"},
        "supportedGenerationMethods": {"type": "array", "items": {"type": "string"}},
    },
}
_MODEL_LIST = {
    "type": "object",
    "required": ["models"],
    "properties": {"models": {"type": "array", "items": _ref("Model")}, "nextPageToken": {"type": "string"}},
}
_OPENAI_MODEL = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
_OPENAI_MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("OpenAIModel")}},
}
_IMAGES_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "examples": _MODEL_IDS},
    "prompt": {"type": "string", "examples": ["A lighthouse at dusk"]},
    "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
    "size": {"type": "string", "examples": ["auto", "1024x1024", "1536x1024", "1792x1024"]},
    "response_format": {"enum": list(RESPONSE_FORMATS)},
    "quality": {"enum": list(QUALITIES)},
    "style": {"enum": list(STYLES)},
    "user": {"type": "string"},
}
_IMAGES_RESPONSE = {
    "type": "object",
    "required": ["created", "data"],
    "properties": {
        "created": {"type": "integer"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"b64_json": {"type": "string"}, "url": {"type": "string"}},
            },
        },
        "usage": {"type": "object"},
        "output_format": {"type": "string"},
        "size": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "examples": _MODEL_IDS},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["system", "developer", "user", "assistant"]},
                    "content": {
                        "anyOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "type": {"enum": ["text", "image_url"]},
                                        "text": {"type": "string"},
                                        "image_url": {
                                            "type": "object",
                                            "properties": {
                                                "url": {
                                                    "type": "string",
                                                    "description": "A data: URL, or an http(s) URL the "
                                                    "gateway fetches (SSRF-guarded)",
                                                }
                                            },
                                        },
                                    },
                                },
                            },
                        ]
                    },
                },
            },
        },
        "stream": {"type": "boolean"},
        "modalities": {"type": "array", "items": {"enum": ["text", "image"]}},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "seed": {"type": "integer"},
        "max_tokens": {"type": "integer"},
        "image_config": {
            "type": "object",
            "properties": {"aspect_ratio": {"enum": _RATIOS}, "image_size": {"enum": _SIZES}},
        },
    },
    "examples": [
        {"model": "gemini-2.5-flash-image", "messages": [{"role": "user", "content": "A red bicycle"}]}
    ],
}
_CHAT_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}
_USAGE_RESPONSE = {
    "type": "object",
    "required": ["key", "usage"],
    "properties": {
        "key": _ref("Key"),
        "usage": {
            "type": "object",
            "properties": {
                "today": _ref("UsageSummary"),
                "last_30_days": _ref("UsageSummary"),
                "all_time": _ref("UsageSummary"),
            },
        },
    },
}
_SUBSCRIPTION = {
    "type": "object",
    "required": ["object", "hard_limit_usd"],
    "properties": {
        "object": {"const": "billing_subscription"},
        "hard_limit_usd": {"type": "number"},
        "soft_limit_usd": {"type": "number"},
        "system_hard_limit_usd": {"type": "number"},
        "access_until": {"type": "integer"},
        "hard_limit_usd_exact": {"type": ["string", "null"]},
        "spent_usd_exact": {"type": "string"},
    },
}
_BILLING_USAGE = {
    "type": "object",
    "required": ["object", "total_usage"],
    "properties": {
        "object": {"const": "list"},
        "total_usage": {"type": "number", "description": "US cents"},
        "total_usage_usd_exact": {"type": "string"},
    },
}

_MODEL_PARAM = {
    "name": "model",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "examples": _MODEL_IDS},
    "description": "A model id (`models/` prefix optional).",
}
_PAGING = [
    {"name": "pageSize", "in": "query", "schema": {"type": "integer"}},
    {"name": "pageToken", "in": "query", "schema": {"type": "string"}},
]
