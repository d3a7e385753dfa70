"""`server.body.read_body`: whole bodies, however their pieces come, and what a big one costs."""

from __future__ import annotations

import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import Request

from bananagate.protocol.errors import ApiError
from bananagate.server.body import ONE_BUFFER_FROM, read_body

Receive = Callable[[], Awaitable[dict[str, Any]]]


def request_of(body: bytes, piece: int, *, declared: int | None) -> Request:
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    messages[-1]["more_body"] = False

    async def receive() -> dict[str, Any]:
        message = messages.pop(0)
        # A fresh object per message, as a server hands over what it just read.
        return {**message, "body": bytes(bytearray(message["body"]))}

    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive)


@pytest.mark.parametrize("size", [0, 10, ONE_BUFFER_FROM - 1, ONE_BUFFER_FROM, ONE_BUFFER_FROM + 12345])
@pytest.mark.parametrize("piece", [1 << 16, 1 << 22, 1 << 30])
@pytest.mark.parametrize("declared", [True, False])
async def test_the_body_comes_back_whole_however_it_is_cut(size: int, piece: int, declared: bool) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    got = await read_body(request_of(body, piece, declared=len(body) if declared else None), 1 << 30)
    assert got == body


async def test_a_big_declared_body_is_held_once_not_twice() -> None:
    """Its pieces go into one buffer as they come; joining them at the end held the body twice."""
    body = b"y" * (3 * ONE_BUFFER_FROM)
    request = request_of(body, 1 << 20, declared=len(body))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        got = await read_body(request, 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == body
    assert peak < 1.2 * len(body)


@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_past_the_limit_is_a_413(declared: bool) -> None:
    body = b"z" * 5000
    with pytest.raises(ApiError) as caught:
        await read_body(request_of(body, 1000, declared=len(body) if declared else None), 4096)
    assert caught.value.code == 413
