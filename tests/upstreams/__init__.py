"""Loopback test upstreams that behave like the real services (auth checks, error shapes), record
every request (headers and raw body bytes) and can be scripted per test.

    with FakeGoogle(keys=["AIza-test"]) as google:
        google.enqueue(google_error(503), rate_limited("2s"))   # the next two answers
        ...                                                      # point a channel at google.url
        assert google.requests[0].header("x-goog-api-key") == "AIza-test"

Each runs uvicorn on a free 127.0.0.1 port in a background thread.
"""

from tests.upstreams.gemini import (
    FakeComet,
    FakeGoogle,
    comet_error,
    gemini_answer,
    google_error,
    png,
    rate_limited,
    sse_events,
    usage,
)
from tests.upstreams.openai import FakeOpenAI, images_answer, openai_error, parse_multipart
from tests.upstreams.server import FakeUpstream, LoopbackServer, Recorded, Reply, StreamReply

__all__ = [
    "FakeComet",
    "FakeGoogle",
    "FakeOpenAI",
    "FakeUpstream",
    "LoopbackServer",
    "Recorded",
    "Reply",
    "StreamReply",
    "comet_error",
    "gemini_answer",
    "google_error",
    "images_answer",
    "openai_error",
    "parse_multipart",
    "png",
    "rate_limited",
    "sse_events",
    "usage",
]
