"""Fixtures for the OpenAI-compatible surface: SDK clients on the session gateway, a gateway that
may fetch from loopback, and a loopback HTTP server to fetch images from."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openai import AsyncOpenAI, OpenAI
from PIL import Image

from tests.conftest import Gateway, start_gateway, stop_gateway

FLASH_25 = "gemini-2.5-flash-image"
PRO_3 = "gemini-3-pro-image-preview"
FLASH_31 = "gemini-3.1-flash-image-preview"


def png(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def sdk(gateway: Gateway, key: str | None = None) -> OpenAI:
    # No SDK retries: a test must see the first answer, not a retried one.
    return OpenAI(base_url=gateway.url + "/v1", api_key=key or gateway.key, max_retries=0, timeout=60)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[OpenAI]:
    with sdk(gateway) as c:
        yield c


@pytest.fixture
async def aclient(gateway: Gateway) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=60) as c:
        yield c


@dataclass
class Served:
    """One canned answer of the test image server."""

    body: bytes
    content_type: str = "image/png"
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageServer:
    """A loopback HTTP server with canned answers by path; records the Host header it saw."""

    port: int
    routes: dict[str, Served]
    seen_hosts: list[str]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    routes: dict[str, Served] = {}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("host", ""))
            answer = routes.get(self.path.split("?")[0])
            if answer is None:
                self.send_error(404)
                return
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                self.send_header("content-type", answer.content_type)
                self.send_header("content-length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the gateway gave up (timeout, size cap): that is the point of some tests

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ImageServer(server.server_address[1], routes, seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def open_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway allowed to fetch from private addresses (the test image server is on loopback),
    with a small fetch size cap and timeout so those limits are quick to hit."""
    env = {
        "BANANAGATE_FETCH_ALLOW_PRIVATE": "true",
        "BANANAGATE_FETCH_MAX_BYTES": "300000",
        "BANANAGATE_FETCH_TIMEOUT": "1.5",
        "BANANAGATE_PUBLIC_URL": "http://gateway.invalid:1234/",
    }
    gw = start_gateway(tmp_path_factory.mktemp("open-gateway"), env=env)
    try:
        yield gw
    finally:
        stop_gateway(gw)
