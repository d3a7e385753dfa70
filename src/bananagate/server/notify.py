"""Wake-ups across gateway processes: "the claim on <name> is over, look again".

In this process, waiters are woken directly; other processes hear it through Redis pub/sub
(one pattern subscription per process) when Redis is configured. A missed message only costs a
waiter its next poll, so waiters always poll as well, slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import anyio

log = logging.getLogger("bananagate.idempotency")


class Notifier:
    """Wakes waiters when a claim ends: in this process directly, in others through Redis."""

    def __init__(self, redis_url: str | None, prefix: str) -> None:
        self._prefix = prefix
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None
        if redis_url:
            import redis.asyncio as aioredis

            # No socket timeout: the subscriber sits idle between messages.
            self._redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)

    @property
    def shared(self) -> bool:
        return self._redis is not None

    @contextlib.contextmanager
    def listening(self, name: str) -> Iterator[asyncio.Event]:
        """An event set when `name` is notified. Enter it before looking at the claim, so a
        notification between the look and the wait is not lost."""
        event = asyncio.Event()
        self._waiters.setdefault(name, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[name]

    def _wake(self, name: str) -> None:
        for event in self._waiters.get(name, ()):
            event.set()

    async def notify(self, name: str) -> None:
        self._wake(name)
        if self._redis is not None:
            try:
                with anyio.fail_after(2):
                    await self._redis.publish(self._prefix + name, b"1")
            except Exception as exc:  # waiters elsewhere still poll
                log.debug("idempotency notification not published: %s", exc)

    async def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._listen(), name="bananagate-idempotency-notify")

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(self._prefix + "*")
                try:
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None and message.get("type") == "pmessage":
                            channel = message["channel"]
                            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                            self._wake(channel[len(self._prefix) :])
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: waiters poll until it is back
                log.warning("idempotency notifications from Redis interrupted: %s", exc)
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()
