"""The request guarantees' headers in the OpenAPI description: `Idempotency-Key`, deadlines, and
the headers every answer of a model route carries (README "Request guarantees")."""

from __future__ import annotations

from typing import Any

_STRING = {"type": "string"}

RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "Server-Timing": {"description": "Gateway and upstream time: `gateway;dur=1.2, upstream;dur=830.5`."},
    "x-request-id": {"description": "The request's id, also in the access log and the ledger."},
    "x-bananagate-cost-usd": {"description": "What this call was charged, a decimal string."},
    "x-bananagate-channel": {"description": "The channel that served the answer."},
    "x-bananagate-attempts": {"description": "Upstream attempts it took (an integer)."},
    "x-bananagate-affinity": {"description": "`kept` or `broken`: did a multi-turn call reach its channel."},
    "x-ratelimit-limit-requests": {"description": "The key's requests-per-minute limit (an integer)."},
    "x-ratelimit-remaining-requests": {"description": "Requests left in the current minute (an integer)."},
    "x-ratelimit-reset-requests": {"description": "When the window frees a request, e.g. `250ms`, `12.5s`."},
    "x-bananagate-budget-remaining-usd": {"description": "The key's budget left, a decimal string."},
    "Idempotent-Replayed": {"description": "`true` when the answer is the one kept for the Idempotency-Key."},
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-255 printable characters. A repeat with the same key and request gets the first answer "
    "(no second call or charge); the same key with another request is a 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
SERVER_TIMEOUT = {
    "name": "X-Server-Timeout",
    "in": "header",
    "required": False,
    "description": "The client's deadline in seconds: no attempt starts that cannot finish in time; "
    "on expiry the answer is 504 DEADLINE_EXCEEDED.",
    "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
}

# (path suffix, method) -> whether the operation takes an Idempotency-Key
_GUARANTEED = {
    ":generateContent": True,
    ":streamGenerateContent": False,
    ":batchGenerateContent": True,
    "/jobs": True,
    "/images/generations": True,
    "/images/edits": True,
    "/chat/completions": False,
}


def add_guarantee_headers(doc: dict[str, Any]) -> dict[str, Any]:
    """Declare the guarantee headers on every model operation of `doc` (in place; returned)."""
    components = doc.setdefault("components", {})
    components["headers"] = {name: {**spec, "schema": _STRING} for name, spec in RESPONSE_HEADERS.items()}
    refs = {name: {"$ref": f"#/components/headers/{name}"} for name in RESPONSE_HEADERS}
    for path, item in doc.get("paths", {}).items():
        suffix = next((s for s in _GUARANTEED if path.endswith(s)), None)
        if suffix is None or "post" not in item:
            continue
        operation = item["post"]
        params = operation.setdefault("parameters", [])
        params.append(SERVER_TIMEOUT)
        if _GUARANTEED[suffix]:
            params.append(IDEMPOTENCY_KEY)
        for response in operation.get("responses", {}).values():
            if isinstance(response, dict) and "$ref" not in response:
                response["headers"] = {**response.get("headers", {}), **refs}
    return doc
