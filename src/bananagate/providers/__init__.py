"""Upstream adapters behind one small async interface, plus the offline emulator."""

from bananagate.providers.base import (
    Answer,
    Call,
    Provider,
    ProviderError,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = ["Answer", "Call", "Provider", "ProviderError", "UpstreamError", "UpstreamTimeout"]
