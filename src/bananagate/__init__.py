"""bananagate: a gateway, offline emulator, SDK and CLI for Gemini image models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bananagate.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `bananagate serve` and `import bananagate` should not pay for the SDK (httpx, PIL).
    if name in ("Client", "AsyncClient"):
        from bananagate import client

        return getattr(client, name)
    raise AttributeError(f"module 'bananagate' has no attribute {name!r}")
