"""Reading a request body once, under a size cap."""

from __future__ import annotations

from starlette.requests import Request

from bananagate.protocol.errors import ApiError


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request payload size exceeds the limit: {limit} bytes.", "INVALID_ARGUMENT")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body as one bytes object; 413 as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise payload_too_large(limit)
        except ValueError:
            raise ApiError(400, "Invalid Content-Length header.", "INVALID_ARGUMENT") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
