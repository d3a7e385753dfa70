"""`bananagate channels`: the upstreams the gateway routes to."""

from __future__ import annotations

import click


@click.group()
def channels() -> None:
    """Manage upstream channels (Google, CometAPI, any Gemini-compatible API, OpenAI images)."""
