"""Pure pieces of the console: session cookies, the origin check, the sign-in throttle,
redirect targets, chart geometry and the playground's request body."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from starlette.requests import Request

from bananagate.console.auth import safe_next
from bananagate.console.charts import bar_chart, nice_max
from bananagate.console.playground_input import PlaygroundInput, request_body
from bananagate.console.session import LoginThrottle, Sessions, same_origin, session_key
from bananagate.protocol.catalog import FLASH_25, FLASH_31
from bananagate.protocol.validation import parse_and_check


def sessions(admin: str = "ak-one", key: bytes = b"k" * 32, ttl: int = 3600) -> Sessions:
    return Sessions(lambda: key, lambda: admin, ttl)


def test_session_round_trip_and_what_invalidates_it() -> None:
    s = sessions()
    session = s.new(signed_in=True)
    cookie = s.encode(session)
    assert s.decode(cookie) == session
    assert s.decode(cookie, now=session.issued + 3601) is None  # expired
    assert sessions(admin="ak-two").decode(cookie) is None  # the admin key changed
    assert sessions(key=b"x" * 32).decode(cookie) is None  # the secret changed
    body, _, sig = cookie.partition(".")
    assert s.decode(body + "." + sig[::-1]) is None
    anonymous = s.new(signed_in=False)
    assert not anonymous.signed_in and s.decode(s.encode(anonymous), now=anonymous.issued + 3601) is None
    assert s.is_admin_key(" ak-one\n") and not s.is_admin_key("ak-on")


def test_session_key_file_is_private_and_stable(tmp_path: Path) -> None:
    first = session_key(tmp_path, None)
    assert session_key(tmp_path, None) == first and len(first) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "console.key").st_mode) == 0o600
    assert session_key(tmp_path, "configured") != first


def request(headers: dict[str, str], host: str = "127.0.0.1:8000", scheme: str = "http") -> Request:
    raw = [(b"host", host.encode())] + [(k.encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "scheme": scheme,
                    "server": ("127.0.0.1", 8000), "query_string": b""})  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"origin": "http://127.0.0.1:8000"}, True),
        ({"origin": "HTTP://127.0.0.1:8000"}, True),
        ({"referer": "http://127.0.0.1:8000/console/keys"}, True),
        ({"origin": "http://127.0.0.1:8001"}, False),
        ({"origin": "https://127.0.0.1:8000"}, False),
        ({"origin": "null", "referer": "http://127.0.0.1:8000/console/"}, False),
        ({"referer": "http://127.0.0.1:8000.evil.example/"}, False),
        ({}, False),
    ],
)
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    assert same_origin(request(headers)) is ok


def test_same_origin_accepts_the_public_url_behind_a_proxy() -> None:
    assert same_origin(request({"origin": "https://gw.example.com"}), "https://gw.example.com/")


def test_login_throttle() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    for t in (0.0, 1.0, 2.0):
        assert not throttle.blocked("a", now=t)
        throttle.failed("a", now=t)
    assert throttle.blocked("a", now=3.0) and not throttle.blocked("b", now=3.0)
    assert not throttle.blocked("a", now=61.0)  # the first failure aged out


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/keys?x=1", "/console/keys?x=1"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil", "/console/"),
        ("https://evil.example/console/", "/console/"),
        ("/admin/keys", "/console/"),
        (None, "/console/"),
    ],
)
def test_safe_next(target: object, expected: str) -> None:
    assert safe_next(target) == expected


def test_chart_geometry() -> None:
    assert [nice_max(v) for v in (0, 0.3, 3, 7, 10, 11, 260)] == [1, 1, 4, 10, 10, 20, 400]
    chart = bar_chart("Requests", [("a", 0), ("b", 5), ("c", 10)])
    assert chart.bars[0].height == 0
    assert chart.bars[2].height == pytest.approx(2 * chart.bars[1].height)
    assert chart.bars[2].y + chart.bars[2].height == pytest.approx(chart.bars[0].y)  # common baseline
    assert chart.total == "15" and not chart.empty
    assert bar_chart("Empty", [("a", 0)]).empty


def test_playground_body_is_a_valid_gemini_request() -> None:
    data = PlaygroundInput("A kitten", FLASH_31, FLASH_31.id, "1:8", "512", [("image/png", b"\x89PNG")])
    body = request_body(data, max_pixels=10**6)
    parsed = parse_and_check(body, FLASH_31)
    assert parsed.aspect_ratio == "1:8" and parsed.image_size == "512" and len(parsed.input_images()) == 1
    flat = orjson.loads(request_body(PlaygroundInput("x", FLASH_25, FLASH_25.id, None, "1K"), 10**6))
    assert "imageConfig" not in flat["generationConfig"]  # nothing chosen, nothing sent


JINJA_PROBE = """
import sys
from starlette.testclient import TestClient
from bananagate.server.app import create_app
from bananagate.settings import Settings

app = create_app(Settings(data_dir=sys.argv[1]))
with TestClient(app) as client:
    before = "jinja2" in sys.modules
    status = client.get("/console/login").status_code
print(before, status, "jinja2" in sys.modules)
"""


def test_jinja_is_loaded_with_the_first_console_page_not_with_the_gateway(tmp_path: Path) -> None:
    """Jinja costs a gateway ~2 MB of memory: it is imported when the console first renders."""
    done = subprocess.run(
        [sys.executable, "-c", JINJA_PROBE, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["False", "200", "True"], done.stderr
