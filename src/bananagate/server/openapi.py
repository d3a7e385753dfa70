"""OpenAPI 3.1 descriptions: the admin API alone at `GET /admin/openapi.json`, and every route of
the gateway (Gemini, OpenAI-compatible, usage, admin, health, metrics, image links, console
entry) at `GET /openapi.json`.

The gateway document is what `tests/reliability/test_schemathesis.py` fuzzes a live gateway
with, checking that no request gets a 5xx and every answer matches what is written here. So the
response schemas say what the gateway really sends (permissive where the upstream's answer
passes through untouched), and every operation's errors are described by its `default`
response in the envelope that route uses.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bananagate.protocol.catalog import INPUT_IMAGE_MIME_TYPES
from bananagate.server.openapi_headers import add_guarantee_headers
from bananagate.server.openapi_schemas import (
    _BILLING_USAGE,
    _CHAT_REQUEST,
    _CHAT_RESPONSE,
    _CONTENT,
    _EITHER_DEFAULT,
    _GENERATE_REQUEST,
    _GENERATE_RESPONSE,
    _GOOGLE_DEFAULT,
    _GOOGLE_ERROR,
    _IMAGES_FIELDS,
    _IMAGES_RESPONSE,
    _MODEL,
    _MODEL_IDS,
    _MODEL_LIST,
    _MODEL_PARAM,
    _OPENAI_DEFAULT,
    _OPENAI_ERROR,
    _OPENAI_MODEL,
    _OPENAI_MODEL_LIST,
    _PAGING,
    _PART,
    _SSE_EVENT,
    _SUBSCRIPTION,
    _USAGE_RESPONSE,
    _json,
    _ref,
)
from bananagate.server.responses import json_response

_USD = {
    "type": ["string", "null"],
    "description": 'USD as a decimal string, e.g. "12.50"',
    "examples": ["10"],
}
_LIMIT = {"type": ["integer", "null"], "minimum": 0}

_KEY_FIELDS: dict[str, Any] = {
    "label": {"type": ["string", "null"], "maxLength": 200, "description": "Free text: owner, purpose."},
    "models": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Allowed models."},
    "budget_usd": _USD,
    "rpm": {**_LIMIT, "description": "Requests per minute (sliding 60 s window)."},
    "images_per_day": {**_LIMIT, "description": "Output images per UTC day."},
    "max_concurrent": {**_LIMIT, "description": "Requests in flight at once."},
    "expires_at": {
        "type": ["string", "null"],
        "description": "ISO 8601 date/time (UTC if no zone) or a duration from now: 30d, 12h.",
    },
    "allow_cidrs": {
        "type": ["array", "null"],
        "items": {"type": "string"},
        "description": "Client address blocks allowed to use the key, e.g. 10.0.0.0/8.",
    },
}

_KEY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "First characters of the secret, for display."},
        "status": {"enum": ["active", "expired", "revoked"]},
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
        "spent_usd": {"type": "string"},
        "reserved_usd": {"type": "string", "description": "Held by requests in flight."},
        "remaining_usd": _USD,
        **_KEY_FIELDS,
    },
}

_SUMMARY = {
    "type": "object",
    "properties": {
        "group": {"type": ["string", "null"]},
        "requests": {"type": "integer"},
        "succeeded": {"type": "integer"},
        "images": {"type": "integer"},
        "prompt_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cost_usd": {"type": "string"},
    },
}

_ERROR = {"description": "Google-style error envelope", "content": {"application/json": {}}}
_AUTH_ERRORS = {"401": _ERROR, "403": _ERROR}


def _filters() -> list[dict[str, Any]]:
    desc = "ISO date/time, or a duration back from now (7d, 12h)"
    return [
        {"name": "key", "in": "query", "schema": {"type": "string"}, "description": "Key name"},
        {"name": "model", "in": "query", "schema": {"type": "string"}},
        {"name": "since", "in": "query", "schema": {"type": "string"}, "description": desc},
        {"name": "until", "in": "query", "schema": {"type": "string"}, "description": desc},
    ]


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_SECRET = {"key": {"type": "string", "description": "The secret: shown this once, never stored."}}

ADMIN_OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "bananagate admin API", "version": "1"},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer", "description": "The admin key"}},
        "schemas": {"Key": _KEY, "UsageSummary": _SUMMARY},
    },
    "security": [{"admin": []}],
    "paths": {
        "/admin/keys": {
            "get": {
                "summary": "List keys (never their secrets)",
                "parameters": [{"name": "revoked", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": _json({"type": "object", "properties": {"keys": {"type": "array"}}})}
                | _AUTH_ERRORS,
            },
            "post": {
                "summary": "Create a key; the response holds its secret once",
                "requestBody": _json(
                    {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, **_KEY_FIELDS},
                    }
                ),
                "responses": {"201": _json({"allOf": [_KEY, {"properties": _SECRET}]}), "409": _ERROR}
                | _AUTH_ERRORS,
            },
        },
        "/admin/keys/{name}": {
            "parameters": _NAME,
            "get": {"summary": "One key", "responses": {"200": _json(_KEY), "404": _ERROR} | _AUTH_ERRORS},
            "patch": {
                "summary": "Change limits; null clears one",
                "requestBody": _json({"type": "object", "properties": _KEY_FIELDS}),
                "responses": {"200": _json(_KEY), "404": _ERROR} | _AUTH_ERRORS,
            },
        },
        "/admin/keys/{name}/revoke": {
            "parameters": _NAME,
            "post": {"summary": "Revoke a key", "responses": {"200": _json(_KEY)} | _AUTH_ERRORS},
        },
        "/admin/keys/{name}/rotate": {
            "parameters": _NAME,
            "post": {
                "summary": "New secret for the key; the old one stops working",
                "responses": {"200": _json({"allOf": [_KEY, {"properties": _SECRET}]})} | _AUTH_ERRORS,
            },
        },
        "/admin/usage": {
            "get": {
                "summary": "Usage totals from the ledger",
                "parameters": [
                    {"name": "by", "in": "query", "schema": {"enum": ["day", "model", "key"]}},
                    *_filters(),
                ],
                "responses": {"200": _json({"type": "object"})} | _AUTH_ERRORS,
            }
        },
        "/admin/usage/requests": {
            "get": {
                "summary": "Ledger rows, oldest first",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}, *_filters()],
                "responses": {"200": _json({"type": "object"})} | _AUTH_ERRORS,
            }
        },
        "/admin/prices": {
            "get": {"summary": "The price table in force", "responses": {"200": _json({})} | _AUTH_ERRORS}
        },
        "/admin/sweep": {
            "post": {
                "summary": "Release expired budget reservations now",
                "responses": {"200": _json({"type": "object"})} | _AUTH_ERRORS,
            }
        },
    },
}


# --- the whole gateway ------------------------------------------------------------------------------


def _op(summary: str, responses: dict[str, Any], default: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, "default": default}, **extra}


def _gemini_paths(version: str) -> dict[str, Any]:
    base = f"/{version}/models"
    body = {"required": True, **_json(_ref("GenerateContentRequest"))}
    ok = {"200": {"description": "The answer", **_json(_ref("GenerateContentResponse"))}}
    paths: dict[str, Any] = {
        base + "/{model}:generateContent": {
            "parameters": [_MODEL_PARAM],
            "post": _op("Generate (text and) an image", ok, _GOOGLE_DEFAULT, requestBody=body),
        },
        base + "/{model}:streamGenerateContent": {
            "parameters": [_MODEL_PARAM],
            "post": _op(
                "The same, streamed: SSE with alt=sse, else one JSON array written progressively",
                {
                    "200": {
                        "description": "Events, each a GenerateContentResponse (or a final error)",
                        "content": {
                            "text/event-stream": {"schema": _SSE_EVENT},
                            "application/json": {"schema": {"type": "array"}},
                        },
                    }
                },
                _GOOGLE_DEFAULT,
                requestBody=body,
                parameters=[{"name": "alt", "in": "query", "schema": {"enum": ["sse", "json"]}}],
            ),
        },
        base + "/{model}:countTokens": {
            "parameters": [_MODEL_PARAM],
            "post": _op(
                "Count a request's input tokens",
                {
                    "200": {
                        "description": "The count",
                        **_json(
                            {
                                "type": "object",
                                "required": ["totalTokens"],
                                "properties": {"totalTokens": {"type": "integer"}},
                            }
                        ),
                    }
                },
                _GOOGLE_DEFAULT,
                requestBody={"required": True, **_json({"type": "object"})},
            ),
        },
    }
    if version == "v1beta":  # the /v1 list and get are shared with OpenAI's (see _shared_models)
        paths[base] = {
            "get": _op(
                "List models",
                {"200": {"description": "Models", **_json(_ref("ModelList"))}},
                _GOOGLE_DEFAULT,
                parameters=_PAGING,
            )
        }
        paths[base + "/{model}"] = {
            "parameters": [_MODEL_PARAM],
            "get": _op(
                "One model", {"200": {"description": "The model", **_json(_ref("Model"))}}, _GOOGLE_DEFAULT
            ),
        }
    return paths


def _jobs_paths(version: str) -> dict[str, Any]:
    """Asynchronous jobs and Google-style batches (server/jobs_routes.py)."""
    job = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "state": {"type": "string"}, "model": {"type": "string"}},
    }
    operation = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "done": {"type": "boolean"},
            "metadata": {"type": "object"},
        },
    }
    submit = {
        "allOf": [
            _ref("GenerateContentRequest"),
            {
                "type": "object",
                "required": ["model"],
                "properties": {
                    "model": {"type": "string", "examples": _MODEL_IDS},
                    "webhook_url": {"type": "string", "description": "https URL called when the job ends"},
                    "webhook_secret": {"type": "string", "minLength": 16, "maxLength": 200},
                },
            },
        ]
    }
    batch_request = {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "object",
                "properties": {
                    "displayName": {"type": "string"},
                    "inputConfig": {
                        "type": "object",
                        "properties": {
                            "requests": {
                                "type": "object",
                                "properties": {
                                    "requests": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "request": _ref("GenerateContentRequest"),
                                                "metadata": {"type": "object"},
                                            },
                                        },
                                    }
                                },
                            }
                        },
                    },
                },
            }
        },
    }
    ok_job = {"200": {"description": "The job", **_json(job)}}
    ok_operation = {"200": {"description": "The batch as a long-running operation", **_json(operation)}}
    empty = {"200": {"description": "Done", **_json({"type": "object"})}}
    state = {"name": "state", "in": "query", "schema": {"type": "string"}}
    base = f"/{version}"
    return {
        base + "/jobs": {
            "get": _op(
                "This key's jobs, newest first",
                {
                    "200": {
                        "description": "Jobs",
                        **_json({"type": "object", "properties": {"jobs": {"type": "array"}}}),
                    }
                },
                _GOOGLE_DEFAULT,
                parameters=[*_PAGING, state],
            ),
            "post": _op(
                "Queue a generateContent call to run in the background",
                ok_job,
                _GOOGLE_DEFAULT,
                requestBody={"required": True, **_json(submit)},
            ),
        },
        base + "/jobs/{job}": {
            "parameters": [{"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _op("A job: its state, and its answer once done", ok_job, _GOOGLE_DEFAULT),
            "delete": _op("Cancel an unfinished job, forget a finished one", ok_job | empty, _GOOGLE_DEFAULT),
        },
        base + "/models/{model}:batchGenerateContent": {
            "parameters": [_MODEL_PARAM],
            "post": _op(
                "Google's Batch API with inlined requests",
                ok_operation,
                _GOOGLE_DEFAULT,
                requestBody={"required": True, **_json(batch_request)},
            ),
        },
        base + "/batches": {
            "get": _op(
                "This key's batches",
                {
                    "200": {
                        "description": "Operations",
                        **_json({"type": "object", "properties": {"operations": {"type": "array"}}}),
                    }
                },
                _GOOGLE_DEFAULT,
                parameters=_PAGING,
            )
        },
        base + "/batches/{batch}": {
            "parameters": [{"name": "batch", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _op("A batch; its answers in input order once done", ok_operation, _GOOGLE_DEFAULT),
            "delete": _op("Cancel an unfinished batch, forget a finished one", empty, _GOOGLE_DEFAULT),
        },
        base + "/batches/{batch}:cancel": {
            "parameters": [{"name": "batch", "in": "path", "required": True, "schema": {"type": "string"}}],
            "post": _op("Cancel a batch", empty, _GOOGLE_DEFAULT),
        },
    }


def _shared_models() -> dict[str, Any]:
    note = (
        "Shared by the Gemini API's /v1 alias and OpenAI's API: a caller authenticating the way "
        "Gemini clients do (x-goog-api-key or ?key=) gets Gemini's shape, any other OpenAI's."
    )
    return {
        "/v1/models": {
            "get": _op(
                "List models",
                {
                    "200": {
                        "description": note,
                        **_json({"anyOf": [_ref("ModelList"), _ref("OpenAIModelList")]}),
                    }
                },
                _EITHER_DEFAULT,
                parameters=_PAGING,
            )
        },
        "/v1/models/{model}": {
            "parameters": [_MODEL_PARAM],
            "get": _op(
                "One model",
                {"200": {"description": note, **_json({"anyOf": [_ref("Model"), _ref("OpenAIModel")]})}},
                _EITHER_DEFAULT,
            ),
        },
    }


def _openai_paths() -> dict[str, Any]:
    images_ok = {"200": {"description": "The images", **_json(_ref("ImagesResponse"))}}
    form = {
        "type": "object",
        "required": ["prompt", "image"],
        "properties": {
            **_IMAGES_FIELDS,
            "image": {
                "description": "One or several image files (image[] also works)",
                "type": "array",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
            },
            "mask": {"type": "string", "description": "Refused: Gemini has no mask input"},
        },
    }
    return {
        "/v1/images/generations": {
            "post": _op(
                "Generate images (n parallel Gemini calls)",
                images_ok,
                _OPENAI_DEFAULT,
                requestBody={
                    "required": True,
                    **_json({"type": "object", "required": ["prompt"], "properties": _IMAGES_FIELDS}),
                },
            )
        },
        "/v1/images/edits": {
            "post": _op(
                "Edit images",
                images_ok,
                _OPENAI_DEFAULT,
                requestBody={"required": True, "content": {"multipart/form-data": {"schema": form}}},
            )
        },
        "/v1/chat/completions": {
            "post": _op(
                "Chat with an image model",
                {
                    "200": {
                        "description": "A completion, or with stream=true chat.completion.chunk events",
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            "text/event-stream": {"schema": _SSE_EVENT},
                        },
                    }
                },
                _OPENAI_DEFAULT,
                requestBody={"required": True, **_json(_ref("ChatRequest"))},
            )
        },
        "/v1/files/images/{name}": {
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "exp", "in": "query", "schema": {"type": "string"}},
                {"name": "sig", "in": "query", "schema": {"type": "string"}},
            ],
            "get": _op(
                "An image made with response_format=url (the signed link is the credential)",
                {
                    "200": {
                        "description": "The image",
                        "content": {
                            m: {"schema": {"type": "string"}} for m in sorted(INPUT_IMAGE_MIME_TYPES)
                        },
                    }
                },
                _OPENAI_DEFAULT,
                security=[],
            ),
            "head": _op(
                "The same, headers only", {"200": {"description": "The image"}}, _OPENAI_DEFAULT, security=[]
            ),
        },
    }


def _usage_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for version in ("v1beta", "v1"):
        paths[f"/{version}/usage"] = {
            "get": _op(
                "This key's limits, balance and usage",
                {"200": {"description": "Usage", **_json(_USAGE_RESPONSE)}},
                _GOOGLE_DEFAULT,
            )
        }
    dates = [
        {"name": "start_date", "in": "query", "schema": {"type": "string", "format": "date"}},
        {"name": "end_date", "in": "query", "schema": {"type": "string", "format": "date"}},
    ]
    for prefix in ("/v1", ""):
        paths[f"{prefix}/dashboard/billing/subscription"] = {
            "get": _op(
                "The key's budget, OpenAI-style",
                {"200": {"description": "Budget", **_json(_SUBSCRIPTION)}},
                _GOOGLE_DEFAULT,
            )
        }
        paths[f"{prefix}/dashboard/billing/usage"] = {
            "get": _op(
                "The key's spending between two dates, in cents",
                {"200": {"description": "Spending", **_json(_BILLING_USAGE)}},
                _GOOGLE_DEFAULT,
                parameters=dates,
            )
        }
    return paths


def _admin_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, item in copy.deepcopy(ADMIN_OPENAPI["paths"]).items():
        for method, op in item.items():
            if method == "parameters":
                continue
            op["security"] = [{"admin": []}]
            op["responses"]["default"] = _GOOGLE_DEFAULT
        paths[path] = item
    paths["/admin/openapi.json"] = {
        "get": _op(
            "The admin API's own description",
            {"200": {"description": "OpenAPI", **_json({"type": "object"})}},
            _GOOGLE_DEFAULT,
            security=[],
        )
    }
    return paths


def _service_paths() -> dict[str, Any]:
    public: dict[str, Any] = {"security": []}
    return {
        "/healthz": {
            "get": _op(
                "Liveness",
                {
                    "200": {
                        "description": "Up",
                        **_json({"type": "object", "properties": {"status": {"const": "ok"}}}),
                    }
                },
                _GOOGLE_DEFAULT,
                **public,
            ),
            "head": _op("Liveness, headers only", {"200": {"description": "Up"}}, _GOOGLE_DEFAULT, **public),
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                _GOOGLE_DEFAULT,
                **public,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                {"200": {"description": "OpenAPI 3.1", **_json({"type": "object"})}},
                _GOOGLE_DEFAULT,
                **public,
            )
        },
        "/console": {
            "get": _op(
                "The web console (HTML, signed in with the admin key; a UI, not an API: its pages "
                "under /console/ are not described here)",
                {"308": {"description": "Redirect to /console/"}},
                _GOOGLE_DEFAULT,
                **public,
            )
        },
    }


def build_gateway_openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {
        **_gemini_paths("v1beta"),
        **_gemini_paths("v1"),
        **_jobs_paths("v1beta"),
        **_jobs_paths("v1"),
        **_shared_models(),
        **_openai_paths(),
        **_usage_paths(),
        **_admin_paths(),
        **_service_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bananagate",
            "version": "1",
            "description": (
                "A gateway for Gemini image models: Google's generateContent API, an OpenAI-compatible "
                "API on the same models, usage and admin APIs. Gemini routes answer errors in Google's "
                "envelope, OpenAI routes in OpenAI's."
            ),
        },
        "components": {
            "securitySchemes": {
                "googApiKey": {"type": "apiKey", "in": "header", "name": "x-goog-api-key"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "A gateway key (sk-...)"},
                "queryKey": {"type": "apiKey", "in": "query", "name": "key"},
                "admin": {"type": "http", "scheme": "bearer", "description": "The admin key"},
            },
            "schemas": {
                "GoogleError": _GOOGLE_ERROR,
                "OpenAIError": _OPENAI_ERROR,
                "Part": _PART,
                "Content": _CONTENT,
                "GenerateContentRequest": _GENERATE_REQUEST,
                "GenerateContentResponse": _GENERATE_RESPONSE,
                "Model": _MODEL,
                "ModelList": _MODEL_LIST,
                "OpenAIModel": _OPENAI_MODEL,
                "OpenAIModelList": _OPENAI_MODEL_LIST,
                "ImagesResponse": _IMAGES_RESPONSE,
                "ChatRequest": _CHAT_REQUEST,
                "ChatCompletion": _CHAT_RESPONSE,
                "Key": _KEY,
                "UsageSummary": _SUMMARY,
            },
        },
        "security": [{"googApiKey": []}, {"bearer": []}, {"queryKey": []}],
        "paths": paths,
    }


GATEWAY_OPENAPI: dict[str, Any] = add_guarantee_headers(build_gateway_openapi())


async def gateway_openapi(request: Request) -> Response:
    return json_response(GATEWAY_OPENAPI)
