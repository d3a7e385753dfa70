"""The OpenAPI 3.1 description of the admin API, served at `GET /admin/openapi.json`."""

from __future__ import annotations

from typing import Any

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


def _json(schema: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


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
