"""Waking idle job workers when work is queued, instead of waiting for their next poll.

In one process (the embedded worker of `serve`) a submit sets an event directly. Across
processes, with `BANANAGATE_REDIS_URL`, the submitter also PUBLISHes on `<prefix>jobs:wake` and
every worker SUBSCRIBEs to it. A lost message only costs latency: workers still poll the
database every `jobs_poll_interval`, which is what keeps the queue correct without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("bananagate.jobs")

RECONNECT_SECONDS = 2.0


class Waker:
    def __init__(self, redis_url: str | None = None, prefix: str = "bananagate:") -> None:
        self._event = asyncio.Event()
        self._redis_url = redis_url
        self.channel = f"{prefix}jobs:wake"
        self._client: Any = None
        self._pending: set[asyncio.Task[None]] = set()

    def poke(self) -> None:
        """Wake this process's worker."""
        self._event.set()

    def _redis(self) -> Any:
        if self._client is None and self._redis_url:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self._redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._client

    async def announce(self) -> None:
        """Wake every worker: this process's, and others' through Redis when configured.

        The publish runs in the background: a slow or absent Redis must not delay the answer."""
        self.poke()
        if self._redis() is None:
            return
        task = asyncio.create_task(self._publish())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self) -> None:
        try:
            await self._redis().publish(self.channel, b"1")
        except Exception as exc:  # workers still poll; a wake-up is only an optimization
            log.warning("cannot announce a job through Redis: %s", exc)

    async def wait(self, timeout: float) -> None:
        """Until poked or `timeout` seconds, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    async def listen(self) -> None:
        """Forever: turn Redis announcements into pokes (no-op without Redis)."""
        if not self._redis_url:
            return
        import redis.asyncio as aioredis

        while True:
            # Its own connection, without a read timeout: a quiet channel is not an error.
            client = aioredis.Redis.from_url(
                self._redis_url, socket_connect_timeout=2, health_check_interval=30
            )
            try:
                pubsub = client.pubsub()
                async with pubsub:
                    await pubsub.subscribe(self.channel)
                    # Work may have been announced while we were not subscribed.
                    self.poke()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.poke()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job wake-up channel lost (%s); polling until it is back", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
