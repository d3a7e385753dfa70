"""Bad input at scale: `/openapi.json` describes every route, and schemathesis fuzzes a live
gateway with it: no request may get a 5xx, and every answer must match the description (status,
content type, body schema, headers).

The run is bounded and reproducible: a few derandomized examples per operation. Generated cases
that name a URL (`://`) are skipped: the gateway would try to fetch it (image URLs, webhooks),
and nothing here may reach past loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route

from bananagate.server.app import create_app
from bananagate.server.openapi import GATEWAY_OPENAPI
from bananagate.settings import Settings
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.reliability.conftest import ADMIN_KEY, FAST_ENV

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# The Gemini routes are one catch-all route in the app; these are what it serves.
GEMINI_PATHS = {
    f"/{version}/models{tail}"
    for version in ("v1beta", "v1")
    for tail in (
        "",
        "/{}",
        "/{}:generateContent",
        "/{}:streamGenerateContent",
        "/{}:countTokens",
        "/{}:batchGenerateContent",
    )
}
# Not an API: the console's HTML pages (its entry, /console, is described).
UNDESCRIBED_MOUNTS = {"/console"}


def _shape(path: str) -> str:
    """`/admin/keys/{name}` and `/admin/keys/{key_name:str}` both become `/admin/keys/{}`."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _route_of(path: str) -> str:
    """The app route a described path is served by: `/v1beta/batches/{}:cancel` is a verb on
    `/v1beta/batches/{}` (the Gemini model methods are listed in GEMINI_PATHS)."""
    shaped = _shape(path)
    return shaped if shaped in GEMINI_PATHS else re.sub(r"\{\}:\w+$", "{}", shaped)


def _app_paths(tmp_path: Path) -> set[str]:
    app = create_app(Settings(data_dir=tmp_path))
    paths: set[str] = set()
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path in UNDESCRIBED_MOUNTS, f"a mount nobody described: {route.path}"
            continue
        assert isinstance(route, Route)
        if route.path == "/{version}/{path:path}":
            paths |= GEMINI_PATHS
        elif route.path.startswith("/{version}/"):
            paths |= {_shape(route.path.replace("{version}", v, 1)) for v in ("v1beta", "v1")}
        else:
            paths.add(_shape(route.path))
    return paths


def test_every_route_is_described(tmp_path: Path) -> None:
    described = {_shape(p) for p in GATEWAY_OPENAPI["paths"]}
    served = _app_paths(tmp_path)
    missing = served - described
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"
    stale = {p for p in described if _route_of(p) not in served}
    assert not stale, f"/openapi.json describes routes the app does not have: {sorted(stale)}"


def test_every_operation_documents_its_errors() -> None:
    for path, item in GATEWAY_OPENAPI["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert "default" in operation["responses"], f"{method.upper()} {path} has no error response"
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(
        tmp_path_factory.mktemp("fuzz"), env={**FAST_ENV, "BANANAGATE_LOG_LEVEL": "warning"}
    )
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


def test_the_served_document_is_this_one(fuzz_gateway: Gateway) -> None:
    served = httpx.get(fuzz_gateway.url + "/openapi.json", timeout=30)
    assert served.status_code == 200 and served.json() == GATEWAY_OPENAPI


# Loaded from the module's dict (the one served, checked above) rather than through a fixture:
# schemathesis' lazy fixture loader does not run on this pytest.
# The coverage phase (every boundary value of every field, ~4000 requests here) is left out to
# keep CI fast; the examples and the fuzzing phase (valid and invalid data) run.
CONFIG = schemathesis.Config.from_dict(
    {"phases": {"coverage": {"enabled": False}}, "generation": {"mode": "all"}}
)
# The Gemini API's /v1 alias runs the very handlers of /v1beta: fuzzing both only costs time.
schema = schemathesis.openapi.from_dict(GATEWAY_OPENAPI, config=CONFIG).exclude(
    path_regex=r"^/v1/(models/\{model\}:|jobs|batches)"
)


def _names_a_url(case: Any) -> bool:
    parts = (case.body, case.query, case.path_parameters, case.headers, case.cookies)
    return "://" in repr(parts)


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis(case: Any, fuzz_gateway: Gateway) -> None:
    if _names_a_url(case):
        return
    if case.path.startswith("/admin/"):
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    else:
        headers = {"x-goog-api-key": fuzz_gateway.key}
    # Keep the default key alive: the run must not rotate or revoke the key it uses.
    if case.path_parameters and case.path_parameters.get("name") == "default":
        return
    case.call_and_validate(base_url=fuzz_gateway.url, headers=headers, checks=CHECKS, timeout=60)


def test_guarantee_headers_are_described() -> None:
    from bananagate.server.openapi import GATEWAY_OPENAPI

    generate = GATEWAY_OPENAPI["paths"]["/v1beta/models/{model}:generateContent"]["post"]
    names = {p["name"] for p in generate["parameters"]}
    assert {"Idempotency-Key", "X-Server-Timeout"} <= names
    headers = generate["responses"]["200"]["headers"]
    for name in (
        "Server-Timing",
        "x-bananagate-cost-usd",
        "x-ratelimit-remaining-requests",
        "Idempotent-Replayed",
    ):
        assert headers[name]["$ref"].endswith(name)
        assert name in GATEWAY_OPENAPI["components"]["headers"]
    stream = GATEWAY_OPENAPI["paths"]["/v1beta/models/{model}:streamGenerateContent"]["post"]
    assert "Idempotency-Key" not in {p["name"] for p in stream["parameters"]}
