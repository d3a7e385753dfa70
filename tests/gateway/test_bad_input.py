"""Bad input of every kind gets the right 4xx in Google's envelope, and the gateway stays healthy."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bananagate.protocol.catalog import MODELS
from tests.conftest import Gateway

from .helpers import (
    FLASH_25,
    PRO_3,
    access_lines,
    assert_envelope,
    b64,
    bomb_png,
    curl_post,
    generate_path,
    noise_png,
    proc_status,
    reset_peak_rss,
    solid_png,
    text_body,
    the_image,
    wait_for_log,
)

MiB = 1024 * 1024
PNG = b64(solid_png())


def _with_parts(*parts: dict[str, Any], **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"parts": [{"text": "edit this"}, *parts]}]}
    if config:
        body["generationConfig"] = config
    return body


def _image(data: str, mime: str = "image/png") -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": data}}


# (id, model, body, code, status, a piece of the message)
BATTERY: list[tuple[str, str, dict[str, Any] | bytes, int, str, str]] = [
    (
        "malformed-json",
        FLASH_25,
        b'{"contents": [{"parts": [',
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload",
    ),
    ("not-json", FLASH_25, b"contents=hello", 400, "INVALID_ARGUMENT", "Invalid JSON payload"),
    ("empty-body", FLASH_25, b"", 400, "INVALID_ARGUMENT", "Invalid JSON payload"),
    ("json-array-root", FLASH_25, b"[1, 2]", 400, "INVALID_ARGUMENT", "Root element must be a message"),
    ("json-too-deep", FLASH_25, b"[" * 100_000, 400, "INVALID_ARGUMENT", "Invalid JSON payload"),
    (
        "bad-utf8",
        FLASH_25,
        b'{"contents": [{"parts": [{"text": "\xff\xfe"}]}]}',
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON",
    ),
    ("contents-not-list", FLASH_25, {"contents": "hello"}, 400, "INVALID_ARGUMENT", "'contents'"),
    (
        "parts-not-list",
        FLASH_25,
        {"contents": [{"parts": 5}]},
        400,
        "INVALID_ARGUMENT",
        "'contents[0].parts'",
    ),
    (
        "text-not-string",
        FLASH_25,
        {"contents": [{"parts": [{"text": 5}]}]},
        400,
        "INVALID_ARGUMENT",
        "contents[0].parts[0].text",
    ),
    (
        "inline-data-not-object",
        FLASH_25,
        {"contents": [{"parts": [{"inlineData": "abc"}]}]},
        400,
        "INVALID_ARGUMENT",
        "inline_data",
    ),
    (
        "candidate-count-string",
        FLASH_25,
        {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": "two"}},
        400,
        "INVALID_ARGUMENT",
        "candidate_count",
    ),
    (
        "generation-config-string",
        FLASH_25,
        {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": "x"},
        400,
        "INVALID_ARGUMENT",
        "generation_config",
    ),
    (
        "modalities-not-list",
        FLASH_25,
        {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseModalities": "IMAGE"}},
        400,
        "INVALID_ARGUMENT",
        "response_modalities",
    ),
    (
        "seed-overflow",
        FLASH_25,
        b'{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"seed": 99999999999999999999999999}}',
        400,
        "INVALID_ARGUMENT",
        "seed",
    ),
    (
        "data-url-prefix",
        FLASH_25,
        _with_parts(_image("data:image/png;base64," + PNG)),
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"data:image/png;base64,",
    ),
    (
        "broken-base64",
        FLASH_25,
        _with_parts(_image("iVBORw0KGgo!!!@@@")),
        400,
        "INVALID_ARGUMENT",
        "Base64 decoding failed",
    ),
    (
        "broken-thought-signature",
        PRO_3,
        {"contents": [{"parts": [{"text": "x", "thoughtSignature": "%%%"}]}]},
        400,
        "INVALID_ARGUMENT",
        "contents[0].parts[0].thought_signature",
    ),
    (
        "too-many-images-2.5",
        FLASH_25,
        _with_parts(*[_image(PNG)] * 4),
        400,
        "INVALID_ARGUMENT",
        "Too many input images: 4",
    ),
    (
        "too-many-images-3",
        PRO_3,
        _with_parts(*[_image(PNG)] * 15),
        400,
        "INVALID_ARGUMENT",
        "Too many input images: 15",
    ),
    ("unsupported-ratio", FLASH_25, text_body(aspectRatio="7:3"), 400, "INVALID_ARGUMENT", "7:3"),
    ("ratio-only-on-3.1", PRO_3, text_body(aspectRatio="8:1"), 400, "INVALID_ARGUMENT", "8:1"),
    ("unsupported-size-2.5", FLASH_25, text_body(imageSize="2K"), 400, "INVALID_ARGUMENT", "2K"),
    ("lowercase-size", PRO_3, text_body(imageSize="1k"), 400, "INVALID_ARGUMENT", "1k"),
    ("size-512-on-pro", PRO_3, text_body(imageSize="512"), 400, "INVALID_ARGUMENT", "512"),
    (
        "candidate-count-2",
        FLASH_25,
        {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}},
        400,
        "INVALID_ARGUMENT",
        "Multiple candidates is not enabled",
    ),
    (
        "candidate-count-2-gemini-3",
        PRO_3,
        {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}},
        400,
        "INVALID_ARGUMENT",
        "Multiple candidates is not enabled for this model",
    ),
    ("empty-contents", FLASH_25, {"contents": []}, 400, "INVALID_ARGUMENT", "contents is not specified"),
    (
        "openai-style-role",
        FLASH_25,
        {
            "contents": [
                {"role": "assistant", "parts": [{"text": "x"}]},
                {"role": "user", "parts": [{"text": "y"}]},
            ]
        },
        400,
        "INVALID_ARGUMENT",
        "Please use a valid role: user, model.",
    ),
    ("no-contents", FLASH_25, {}, 400, "INVALID_ARGUMENT", "contents is not specified"),
    ("empty-parts", FLASH_25, {"contents": [{"parts": []}]}, 400, "INVALID_ARGUMENT", "contents[0].parts"),
    (
        "part-without-data",
        FLASH_25,
        {"contents": [{"parts": [{}]}]},
        400,
        "INVALID_ARGUMENT",
        "required oneof field 'data'",
    ),
    ("empty-image-data", FLASH_25, _with_parts(_image("")), 400, "INVALID_ARGUMENT", "data"),
    (
        "no-mime-type",
        FLASH_25,
        _with_parts({"inlineData": {"data": PNG}}),
        400,
        "INVALID_ARGUMENT",
        "mime_type",
    ),
    (
        "pdf-mime-type",
        FLASH_25,
        _with_parts(_image(b64(b"%PDF-1.4 not an image"), "application/pdf")),
        400,
        "INVALID_ARGUMENT",
        "Unsupported MIME type: application/pdf",
    ),
    (
        "bare-png-mime-type",
        FLASH_25,
        _with_parts(_image(PNG, "png")),
        400,
        "INVALID_ARGUMENT",
        "Unsupported MIME type: png",
    ),
    (
        "undecodable-image",
        FLASH_25,
        _with_parts(_image(b64(b"these bytes are no image at all " * 8))),
        400,
        "INVALID_ARGUMENT",
        "Provided image is not valid",
    ),
    (
        "truncated-png",
        FLASH_25,
        _with_parts(_image(b64(solid_png((300, 300))[:120]))),
        400,
        "INVALID_ARGUMENT",
        "Provided image is not valid",
    ),
    (
        "jpeg-labelled-png-but-garbage",
        PRO_3,
        _with_parts(_image(b64(b"\xff\xd8\xff\xe0" + b"\x00" * 64), "image/jpeg")),
        400,
        "INVALID_ARGUMENT",
        "Provided image is not valid",
    ),
]


@pytest.fixture(scope="module")
def log_mark(gateway: Gateway) -> int:
    """Where the server log stood when this module began."""
    return gateway.log_path.stat().st_size


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture
def raw(gateway: Gateway) -> Iterator[httpx.Client]:
    """Like `api`, but sends bodies exactly as given."""
    with httpx.Client(base_url=gateway.url, headers={"x-goog-api-key": gateway.key}, timeout=120) as c:
        yield c


def _post(
    client: httpx.Client, model: str, body: dict[str, Any] | bytes, method: str = "generateContent"
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        generate_path(model, method), content=content, headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("model", "body", "code", "status", "needle"), [c[1:] for c in BATTERY], ids=[c[0] for c in BATTERY]
)
def test_battery(
    log_mark: int,
    raw: httpx.Client,
    model: str,
    body: dict[str, Any] | bytes,
    code: int,
    status: str,
    needle: str,
) -> None:
    message = assert_envelope(_post(raw, model, body), code, status)
    assert needle in message
    if code == 400 and status == "INVALID_ARGUMENT" and not isinstance(body, bytes):
        # The same body on the streaming route fails the same way, before any event is sent.
        streamed = raw.post(
            generate_path(model, "streamGenerateContent") + "?alt=sse",
            content=json.dumps(body).encode(),
        )
        assert assert_envelope(streamed, code, status) == message


def test_base64_error_names_the_field(log_mark: int, raw: httpx.Client) -> None:
    response = _post(raw, FLASH_25, _with_parts(_image("data:image/png;base64," + PNG)))
    assert_envelope(response, 400, "INVALID_ARGUMENT")
    details = response.json()["error"]["details"]
    assert details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert details[0]["fieldViolations"][0]["field"] == "contents[0].parts[1].inline_data.data"


# --- sizes: bodies and images ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def huge_body(workdir: Path) -> Path:
    """A well-formed 25 MiB request (over the 20 MiB default limit)."""
    path = workdir / "huge.json"
    image = base64.b64encode(b"\x00" * (19 * MiB)).decode()
    path.write_text(json.dumps(_with_parts(_image(image))))
    assert path.stat().st_size > 25 * MiB
    return path


def test_body_limit_is_exact(log_mark: int, raw: httpx.Client) -> None:
    """20 MiB (the default limit) is accepted; one byte more is 413. JSON allows trailing blanks."""
    limit = 20 * MiB
    body = json.dumps(text_body("right at the limit")).encode()
    at_limit = body + b" " * (limit - len(body))
    assert len(at_limit) == limit
    assert _post(raw, FLASH_25, at_limit).status_code == 200
    assert_envelope(_post(raw, FLASH_25, at_limit + b" "), 413)


def test_25_mib_body_is_413_with_httpx(log_mark: int, raw: httpx.Client, huge_body: Path) -> None:
    message = assert_envelope(_post(raw, FLASH_25, huge_body.read_bytes()), 413)
    assert "payload size exceeds the limit" in message


def test_25_mib_body_is_413_with_httpx_chunked(log_mark: int, raw: httpx.Client, huge_body: Path) -> None:
    data = huge_body.read_bytes()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]

    response = raw.post(
        generate_path(FLASH_25), content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("expect", ["default", "no-expect", "chunked"])
def test_25_mib_body_is_413_with_curl(
    log_mark: int, gateway: Gateway, workdir: Path, huge_body: Path, expect: str
) -> None:
    # curl sends `Expect: 100-continue` for big bodies by default; without it, or chunked, the
    # gateway answers while the upload is still under way.
    extra = {"default": [], "no-expect": ["-H", "Expect:"], "chunked": ["-H", "Transfer-Encoding: chunked"]}[
        expect
    ]
    result = curl_post(gateway, generate_path(FLASH_25), huge_body, workdir, auth="bearer", extra=extra)
    message = assert_envelope(result, 413)
    assert "payload size exceeds the limit" in message


def test_decompression_bomb_is_400_quickly(log_mark: int, gateway: Gateway, raw: httpx.Client) -> None:
    bomb = bomb_png(60_000, 60_000)
    assert len(bomb) < 200
    pid = gateway.process.pid
    peak_resettable = reset_peak_rss(pid)
    before = proc_status(pid, "VmHWM" if peak_resettable else "VmRSS")
    started = time.monotonic()
    response = _post(raw, FLASH_25, _with_parts(_image(b64(bomb))))
    elapsed = time.monotonic() - started
    message = assert_envelope(response, 400, "INVALID_ARGUMENT")
    assert "too large" in message
    assert elapsed < 5, elapsed
    # 60000×60000 RGB would be 10 GB; the gateway must refuse it from the header alone.
    after = proc_status(pid, "VmHWM" if peak_resettable else "VmRSS")
    assert after - before < 64 * MiB, (before, after)
    # A bomb under Pillow's own threshold but over the gateway's pixel budget, too.
    mid = _post(raw, PRO_3, _with_parts(_image(b64(bomb_png(12_000, 12_000)))))
    assert "too large" in assert_envelope(mid, 400, "INVALID_ARGUMENT")
    assert proc_status(pid, "VmHWM" if peak_resettable else "VmRSS") - before < 64 * MiB


# --- routes -------------------------------------------------------------------------------------------------


def test_unknown_model(log_mark: int, raw: httpx.Client) -> None:
    message = assert_envelope(_post(raw, "gemini-9-ultra-image", text_body()), 404, "NOT_FOUND")
    assert message == (
        "models/gemini-9-ultra-image is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their supported methods."
    )
    streamed = raw.post(
        generate_path("gemini-9-ultra-image", "streamGenerateContent") + "?alt=sse", json=text_body()
    )
    assert "not supported for StreamGenerateContent" in assert_envelope(streamed, 404, "NOT_FOUND")
    assert "API version v1," in assert_envelope(
        raw.post(generate_path("gemini-9-ultra-image", version="v1"), json=text_body()), 404
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1beta/models/gemini-2.5-flash-image:generateContent", "POST"),
        ("PUT", "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent", "POST"),
        ("DELETE", "/v1beta/models/gemini-2.5-flash-image", "GET"),
        ("POST", "/v1beta/models", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_http_method_is_405(
    log_mark: int, raw: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = raw.request(method, path)
    assert_envelope(response, 405)
    assert allowed in response.headers["allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1beta",
        "/v1beta/",
        "/nowhere",
        "/v1beta/nothing-here",
        "/v1beta/models/gemini-2.5-flash-image:noSuchMethod",
        "/v1beta/models/:generateContent",
        "/v1beta/tunedModels/x",
        "/v2/models",
        "/v1alpha/models/gemini-2.5-flash-image:generateContent",
        "/v1beta1/models",
    ],
)
def test_unknown_routes_are_404(log_mark: int, raw: httpx.Client, path: str) -> None:
    assert_envelope(raw.post(path, json=text_body()) if ":" in path else raw.get(path), 404, "NOT_FOUND")


def test_bad_list_paging(log_mark: int, raw: httpx.Client) -> None:
    assert_envelope(raw.get("/v1beta/models", params={"pageSize": "many"}), 400, "INVALID_ARGUMENT")
    assert_envelope(raw.get("/v1beta/models", params={"pageToken": "-2"}), 400, "INVALID_ARGUMENT")


# --- what must keep working ---------------------------------------------------------------------------------


def test_models_prefix_in_path(log_mark: int, raw: httpx.Client) -> None:
    response = raw.post("/v1beta/models/models/gemini-2.5-flash-image:generateContent", json=text_body())
    assert response.status_code == 200, response.text[:300]
    assert response.json()["modelVersion"] == FLASH_25
    got = raw.get("/v1beta/models/models/gemini-3-pro-image-preview")
    assert got.status_code == 200 and got.json()["name"] == "models/gemini-3-pro-image-preview"


def test_wrapped_and_urlsafe_base64_are_accepted(log_mark: int, raw: httpx.Client) -> None:
    # `base64` without -w0 wraps at 76 columns; the Python SDK sends URL-safe Base64 without
    # caring about padding. Both are valid proto3 JSON bytes.
    image = noise_png((320, 180), seed=5)  # 16:9
    wrapped = base64.encodebytes(image).decode()
    assert "\n" in wrapped
    urlsafe = base64.urlsafe_b64encode(image).decode().rstrip("=")
    for data in (wrapped, urlsafe):
        response = _post(raw, FLASH_25, _with_parts(_image(data)))
        assert response.status_code == 200, response.text[:300]
        mime, picture = the_image(response.json())
        assert (mime, picture.size) == ("image/png", (1344, 768))


def test_v1_serves_the_same_routes(log_mark: int, raw: httpx.Client) -> None:
    listed = raw.get("/v1/models")
    assert listed.status_code == 200
    assert [m["name"] for m in listed.json()["models"]] == [f"models/{m.id}" for m in MODELS]
    assert raw.get("/v1/models/gemini-2.5-flash-image").json()["displayName"] == "Nano Banana"
    generated = raw.post(generate_path(FLASH_25, version="v1"), json=text_body(aspectRatio="3:2"))
    assert generated.status_code == 200
    streamed = raw.post(
        generate_path(FLASH_25, "streamGenerateContent", version="v1") + "?alt=sse", json=text_body()
    )
    assert streamed.status_code == 200 and streamed.text.startswith("data: {")
    counted = raw.post(generate_path(FLASH_25, "countTokens", version="v1"), json=text_body())
    assert counted.status_code == 200 and counted.json()["totalTokens"] > 0
    assert_envelope(raw.post(generate_path(FLASH_25, version="v1"), json=text_body(aspectRatio="7:3")), 400)


def test_healthz(log_mark: int, gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/healthz", timeout=10)  # no key needed
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


def test_head_works_where_get_does(log_mark: int, raw: httpx.Client) -> None:
    for path in ("/healthz", "/v1beta/models", "/v1beta/models/gemini-2.5-flash-image"):
        response = raw.head(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response.content == b"" and response.headers["x-request-id"]


def test_every_response_has_a_request_id_and_one_access_line(
    log_mark: int, gateway: Gateway, raw: httpx.Client
) -> None:
    start = gateway.log_path.stat().st_size
    responses = [
        raw.get("/healthz"),
        raw.get("/v1beta/models"),
        raw.get("/v1beta/models/gemini-2.5-flash-image"),
        raw.post(generate_path(FLASH_25), json=text_body()),
        raw.post(generate_path(FLASH_25, "streamGenerateContent") + "?alt=sse", json=text_body()),
        raw.post(generate_path(FLASH_25, "countTokens"), json=text_body()),
        raw.post(generate_path(FLASH_25), json=text_body(aspectRatio="7:3")),
        raw.get(generate_path(FLASH_25)),
        raw.get("/nowhere"),
        httpx.post(gateway.url + generate_path(FLASH_25), json=text_body(), timeout=30),  # no key
        raw.post(generate_path(FLASH_25), content=b"x" * (21 * MiB)),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), [(r.request.url, r.status_code) for r in responses]
    assert len(set(ids)) == len(ids)
    log = wait_for_log(gateway, [f"rid={i}" for i in ids], start=start)
    lines = access_lines(log)
    for rid, response in zip(ids, responses, strict=True):
        mine = [line for line in lines if f"rid={rid}" in line]
        assert len(mine) == 1, (rid, mine)
        assert f'"{response.request.method} {response.request.url.path}" {response.status_code} ' in mine[0]


def test_server_stays_healthy(log_mark: int, gateway: Gateway, raw: httpx.Client) -> None:
    """Runs last in this module: after the whole battery, a normal request still works."""
    assert gateway.process.poll() is None, "the gateway died"
    response = raw.post(generate_path(PRO_3), json=text_body(aspectRatio="16:9", imageSize="1K"))
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    log = wait_for_log(gateway, [f"rid={rid}"], start=log_mark)
    assert "Traceback" not in log
    statuses = [line.split('" ', 1)[1].split()[0] for line in access_lines(log)]
    assert statuses and not [s for s in statuses if s.startswith("5")], statuses
