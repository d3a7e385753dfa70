"""Shared by the reliability suite: gateways started with chosen settings, a raw TCP upstream that
misbehaves the ways real networks do, raw client sockets, and ledger checks.

Everything talks to 127.0.0.1 only. Timeouts in these gateways are shortened (header and body
deadlines of a second or two) so that slow-client cases finish quickly.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bananagate.store import KeyLimits, LedgerRow, Store
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.upstreams import gemini_answer, png

FLASH = "gemini-2.5-flash-image"
GENERATE = f"/v1beta/models/{FLASH}:generateContent"
STREAM = f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
ADMIN_KEY = "ak-reliability-admin-5f0c1e2d3b4a59687766554433221100"
UPSTREAM_KEY = "AIzaSy-reliability-upstream-key-0123456789"
PRICE_NANOS = 39_000_000  # one gemini-2.5-flash-image image
BODY = b'{"contents": [{"parts": [{"text": "A banana wearing sunglasses"}]}]}'

# Short deadlines for the gateways of this suite (the defaults are 10 s and 30 s).
FAST_ENV = {
    "BANANAGATE_ADMIN_KEY": ADMIN_KEY,
    "BANANAGATE_HEADER_TIMEOUT": "1.5",
    "BANANAGATE_BODY_TIMEOUT": "1.5",
    "BANANAGATE_LOG_LEVEL": "info",
    "BANANAGATE_CONSOLE": "false",
    # Tests present wrong keys on purpose; the per-address limit has a test of its own.
    "BANANAGATE_AUTH_FAILURES_PER_MINUTE": "1000",
}


def db_url(gateway: Gateway) -> str:
    return f"sqlite:///{gateway.data_dir / 'bananagate.db'}"


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start gateways (`bananagate serve`) with FAST_ENV plus `env`; all stopped after the test."""
    started: list[Gateway] = []

    def start(
        *, env: dict[str, str] | None = None, config: str | None = None, args: tuple[str, ...] = ()
    ) -> Gateway:
        data_dir = tmp_path / f"gw{len(started)}"
        data_dir.mkdir()
        extra = args
        if config is not None:
            path = data_dir / "channels.toml"
            path.write_text(config)
            extra = ("--config", str(path), *args)
        gateway = start_gateway(data_dir, env={**FAST_ENV, **(env or {})}, args=extra)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            with contextlib.suppress(Exception):
                stop_gateway(gateway)


@pytest.fixture(scope="package")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One emulator gateway (FAST_ENV) for every test of the suite that needs no settings of its
    own; tests keep their books apart by using keys of their own (`new_key`)."""
    gateway = start_gateway(tmp_path_factory.mktemp("reliability"), env=FAST_ENV)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


def new_key(gateway: Gateway, name: str, **limits: Any) -> tuple[int, str]:
    """A key created straight in the gateway's database (it sees it on its next lookup)."""
    with Store.open(db_url(gateway)) as store:
        record, secret = store.keys.create_key(name, limits=KeyLimits(**limits))
    return record.id, secret


def ledger(gateway: Gateway, key_id: int | None = None) -> list[LedgerRow]:
    with Store.open(db_url(gateway)) as store:
        return list(store.ledger.rows(key_id=key_id))


def wait_for_ledger(gateway: Gateway, key_id: int, count: int, timeout: float = 10.0) -> list[LedgerRow]:
    """The key's ledger rows once there are `count` of them (release/settle run just after the
    client's answer or disconnect)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger(gateway, key_id)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def assert_books_balance(gateway: Gateway, key_id: int, *, charged: int) -> list[LedgerRow]:
    """No request charged twice, nothing held, and the key's spend is exactly the ledger's."""
    with Store.open(db_url(gateway)) as store:
        rows = list(store.ledger.rows(key_id=key_id))
        ids = [r.request_id for r in rows]
        assert len(ids) == len(set(ids)), f"a request has two ledger rows: {ids}"
        key = store.keys.get_key_by_id(key_id)
        assert key is not None
        assert store.reservations.held(key_id) == []
        assert key.reserved_nanos == 0
        assert key.spent_nanos == sum(r.cost_nanos for r in rows) == charged
    return rows


def assert_google_envelope(response: httpx.Response, code: int | None = None) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert isinstance(error["code"], int) and isinstance(error["message"], str) and error["status"]
    assert error["code"] == response.status_code
    if code is not None:
        assert response.status_code == code, response.text
    assert response.headers.get("x-request-id")
    return dict(error)


def port_of(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send `data` on a fresh connection, read until the server closes; (bytes, seconds taken)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        started = time.monotonic()
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received, time.monotonic() - started


def http_request(path: str, headers: dict[str, str], body: bytes = b"", method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# --- a raw upstream ------------------------------------------------------------------------------


@dataclass
class Behaviour:
    """How the raw upstream answers one request.

    kind: `ok` (a Gemini answer), `status` (an error status with Google's envelope), `reset`
    (headers and half the body, then a TCP reset), `short` (Content-Length says more than is
    sent, then FIN), `truncated` (a 200 whose complete body is cut-off JSON), `stall` (never
    answers), `hold` (never answers, and notes in `closed` when the gateway hangs up), `trickle` (the whole answer, `chunk` bytes every `pace` seconds), `sse` (an event
    stream; `cut_after` events then a reset).
    """

    kind: str = "ok"
    status: int = 200
    pace: float = 0.05
    chunk: int = 64
    cut_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    echo_key: bool = False  # an error message quoting the credentials the request carried


def gemini_body(model: str = FLASH) -> bytes:
    return orjson.dumps(gemini_answer(model, png((200, 30, 30)), text="served by raw"))


def _credentials(head: bytes) -> str:
    lines = head.decode("latin-1").split("\r\n")
    names = ("x-goog-api-key:", "authorization:")
    found = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith(names)]
    if "key=" in lines[0]:
        found.append(lines[0].split("key=", 1)[1].split()[0].split("&")[0])
    return " ".join(found)


def _error_body(status: int, quoted: str = "") -> bytes:
    names = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    error: dict[str, Any] = {
        "code": status,
        "message": f"API key not valid: {quoted}" if quoted else "upstream says no",
        "status": names.get(status, "UNKNOWN"),
    }
    if status == 429:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.1s"}]
    return orjson.dumps({"error": error})


class RawUpstream:
    """A Gemini-like upstream written on raw sockets, so it can break HTTP in ways a framework
    never would. Each request takes the next scripted Behaviour (then `default`)."""

    def __init__(self) -> None:
        self.script: list[Behaviour] = []
        self.default = Behaviour()
        self.requests: list[bytes] = []  # each request's head
        self.closed: list[float] = []  # when `hold` requests saw the gateway close (monotonic)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RawUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def enqueue(self, *behaviours: Behaviour) -> None:
        with self.lock:
            self.script.extend(behaviours)

    def _next(self) -> Behaviour:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        buffer = b""
        with contextlib.suppress(OSError):
            while True:  # keep-alive: one request after another
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                with self.lock:
                    self.requests.append(head)
                if not self._answer(sock, self._next(), head):
                    return

    def _answer(self, sock: socket.socket, how: Behaviour, head: bytes) -> bool:
        """Answer one request; False when the connection is finished."""
        if how.kind == "stall":
            self.stop.wait(30)
            return False
        if how.kind == "hold":
            sock.settimeout(30)
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
            self.closed.append(time.monotonic())
            return False
        if how.kind == "sse":
            return self._sse(sock, how, head)
        if how.kind == "status":
            body = _error_body(how.status, _credentials(head) if how.echo_key else "")
            status = how.status
        elif how.kind == "truncated":
            body = gemini_body()[:200]
            status = 200
        else:
            body = gemini_body()
            status = 200
        declared = len(body) * 2 if how.kind == "short" else len(body)
        extra = "".join(f"{k}: {v}\r\n" for k, v in how.headers.items())
        response = (
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n{extra}\r\n"
        ).encode() + body
        if how.kind == "reset":
            sock.sendall(response[: len(response) // 2])
            _reset(sock)
            return False
        if how.kind == "trickle":
            for start in range(0, len(response), how.chunk):
                if self.stop.wait(how.pace):
                    return False
                sock.sendall(response[start : start + how.chunk])
            return True
        sock.sendall(response)
        return how.kind != "short"

    def _sse(self, sock: socket.socket, how: Behaviour, head: bytes) -> bool:
        first = orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "drawing"}]}}]})
        events = [first, gemini_body()]
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for index, event in enumerate(events):
            if how.cut_after is not None and index >= how.cut_after:
                self.stop.wait(how.pace)
                _reset(sock)
                return False
            frame = b"data: " + event + b"\r\n\r\n"
            sock.sendall(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            self.stop.wait(how.pace)
        sock.sendall(b"0\r\n\r\n")
        return True


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0): a connection reset by peer."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture(scope="package")
def raw_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Gateway]]:
    """One raw upstream and one gateway routing to it, for the whole suite (each test uses its
    own key, so the books of one never mix with another's). The circuit breaker is set out of
    reach: these tests fail the channel on purpose, one after the other."""
    with RawUpstream() as upstream:
        data_dir = tmp_path_factory.mktemp("raw")
        config = data_dir / "channels.toml"
        config.write_text(channel_config(upstream.url, read_timeout=1.0, circuit_failures=1000))
        gateway = start_gateway(data_dir, env=FAST_ENV, args=("--config", str(config)))
        try:
            yield upstream, gateway
        finally:
            stop_gateway(gateway)


@pytest.fixture
def raw_upstream(raw_pair: tuple[RawUpstream, Gateway]) -> Iterator[RawUpstream]:
    upstream = raw_pair[0]
    yield upstream
    with upstream.lock:
        upstream.script.clear()
    upstream.default = Behaviour()


@pytest.fixture
def raw_gateway(raw_pair: tuple[RawUpstream, Gateway], raw_upstream: RawUpstream) -> Gateway:
    return raw_pair[1]


def channel_config(url: str, *, read_timeout: float = 2.0, **routing: float) -> str:
    """A config with one `gemini` channel at `url` and fast retries (overridable)."""
    knobs = {"backoff_base": 0.05, "backoff_max": 0.2, "max_cooldown_wait": 0.5, "default_cooldown": 0.2}
    knobs.update(routing)
    lines = ["[routing]", *(f"{k} = {v}" for k, v in knobs.items()), ""]
    lines += [
        "[[channels]]",
        'name = "raw"',
        'kind = "gemini"',
        f'base_url = "{url}"',
        f'keys = ["{UPSTREAM_KEY}"]',
        "connect_timeout = 2",
        f"read_timeout = {read_timeout}",
    ]
    return "\n".join(lines) + "\n"


def gateway_healthy(gateway: Gateway) -> None:
    """The gateway still answers at once: nothing is hung."""
    response = httpx.get(gateway.url + "/healthz", timeout=5)
    assert response.status_code == 200
