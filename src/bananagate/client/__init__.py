"""The Python SDK: `Client` / `AsyncClient` for Gemini image models (httpx).

Layout: `request` builds requests and `parse` reads answers (pure functions); `base` holds what
the two clients share; `sync` and `aio` add only the I/O. `inputs` turns paths, bytes, files,
PIL images and data URLs into request images; `collage` builds the guide's Method 1 grid;
`chat` keeps multi-turn history; `retry` decides when to try again; `batch` runs JSONL jobs.
"""

from bananagate.client.aio import AsyncClient
from bananagate.client.chat import AsyncChatSession, ChatSession
from bananagate.client.config import ClientConfig
from bananagate.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BananagateError,
    ConfigurationError,
    InvalidInputError,
    InvalidRequestError,
    NoImageError,
    NotFoundError,
    RateLimitError,
    SafetyBlockedError,
    ServerError,
    TooManyImagesError,
    TransportError,
)
from bananagate.client.inputs import ImageInput, InputImage
from bananagate.client.request import HttpRequest
from bananagate.client.result import GeneratedImage, GenerateResult
from bananagate.client.retry import RetryPolicy
from bananagate.client.sync import Client
from bananagate.protocol.response import Usage

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncChatSession",
    "AsyncClient",
    "AuthenticationError",
    "BananagateError",
    "ChatSession",
    "Client",
    "ClientConfig",
    "ConfigurationError",
    "GenerateResult",
    "GeneratedImage",
    "HttpRequest",
    "ImageInput",
    "InputImage",
    "InvalidInputError",
    "InvalidRequestError",
    "NoImageError",
    "NotFoundError",
    "RateLimitError",
    "RetryPolicy",
    "SafetyBlockedError",
    "ServerError",
    "TooManyImagesError",
    "TransportError",
    "Usage",
]
