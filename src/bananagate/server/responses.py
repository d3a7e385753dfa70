"""JSON responses in the Google envelope."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from bananagate.protocol.errors import ApiError

JSON_TYPE = "application/json; charset=UTF-8"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON_TYPE, headers=headers)


def raw_json_response(
    body: bytes | bytearray, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    # Starlette sends bytes or a memoryview as they are (a bytearray it would try to encode).
    content = memoryview(body) if isinstance(body, bytearray) else body
    return Response(content, status_code=status, media_type=JSON_TYPE, headers=headers)


def error_response(error: ApiError) -> Response:
    return Response(error.to_json(), status_code=error.code, media_type=JSON_TYPE, headers=error.headers)
