"""Which upstream serves a call: channels by model, retries with backoff, failover, key cooldowns
and circuits. The decisions are `selection.AttemptPlan`'s; this module runs them against the
providers and keeps `call.attempts` / `call.channel` current for metering and response headers,
with the time spent on upstreams and in backoff (`Server-Timing`).

Two request guarantees shape the plan: the call's deadline (no retry or failover attempt starts
that cannot finish before it, judged by how long attempts on that channel usually take) and
conversation affinity (`call.prefer_channel` goes first; `call.affinity` says whether it served).

Aliases (`[aliases]` in the config file) and a channel's `model_map` change the model name the
upstream is asked for (its URL, or `model` for OpenAI); the request body is never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio

from bananagate.config import GatewayConfig, load_config
from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.errors import (
    RETRY_INFO_TYPE,
    ApiError,
    format_duration,
    model_not_found,
    resource_exhausted,
)
from bananagate.providers.base import Answer, Call, Provider, ProviderError, UpstreamError, UpstreamTimeout
from bananagate.providers.factory import EmulatorOptions
from bananagate.providers.upstream_errors import UpstreamKeyRejected
from bananagate.server.deadlines import AttemptTimes
from bananagate.server.registry import ChannelRegistry, LiveChannel, Route, database_loader
from bananagate.server.selection import AttemptPlan, GiveUp, Outcome, Try, Wait
from bananagate.server.upstream_health import Health
from bananagate.settings import Settings
from bananagate.store import KeyCipher, Store

log = logging.getLogger("bananagate.routing")

Sleep = Callable[[float], Awaitable[Any]]
T = TypeVar("T")
# Starts one upstream call; registers any cleanup on the stack.
Starter = Callable[[Provider, Call, contextlib.AsyncExitStack], Awaitable[T]]


class ModelRouter:
    """The seam between the pipeline and the providers.

    `ModelRouter(provider)` serves every catalog model from that one provider (tests, embedding);
    `build_router(settings, ...)` makes the configured one.
    """

    def __init__(
        self,
        default: Provider | None = None,
        *,
        registry: ChannelRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if registry is None:
            if default is None:
                raise ValueError("ModelRouter needs a provider or a channel registry")
            registry = ChannelRegistry.single(default)
        self.registry = registry
        self.policy = registry.config.routing
        self.health = Health(self.policy, clock)
        self.attempt_times = AttemptTimes(self.policy.min_attempt_time)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    # --- what is served ---------------------------------------------------------------------

    def models(self) -> tuple[ImageModel, ...]:
        return self.registry.snapshot().models()

    def find(self, model_id: str) -> ImageModel | None:
        return self.registry.snapshot().find(model_id)

    def channel_count(self, model_id: str) -> int:
        """How many channels could serve `model_id` (0 when none; 1 leaves no choice)."""
        route = self.registry.snapshot().route(model_id)
        return 0 if route is None else len(route.channels)

    async def start(self) -> None:
        await self.registry.start()

    async def aclose(self) -> None:
        await self.registry.aclose()

    # --- calls --------------------------------------------------------------------------------

    async def generate(self, call: Call) -> Answer:
        route = self._route(call)
        if route.direct:
            channel = self._begin(call, route, Try(0, 0))
            async with channel.lease(), self._upstream(call, channel.name):
                return await channel.providers[0].generate(call)
        answer, stack, _ = await self._attempt(call, route, _generate)
        await stack.aclose()
        return answer

    async def stream(self, call: Call) -> AsyncGenerator[bytes, None]:
        """Events as the upstream sends them. Retries and failover happen only before the first
        event: once one has reached the client, a later failure ends the stream (as an error event)."""
        route = self._route(call)
        if route.direct:
            channel = self._begin(call, route, Try(0, 0))
            direct = channel.providers[0].stream(call)
            async with channel.lease(), _closing(direct):
                async with self._upstream(call, channel.name):
                    first = await _first(direct)
                if first is None:
                    return
                yield first
                async for event in direct:
                    yield event
            return
        (events, first), stack, channel = await self._attempt(call, route, _open_stream)
        async with stack:
            if first is None:
                return
            yield first
            try:
                async for event in events:
                    yield event
            except (UpstreamTimeout, UpstreamError) as exc:
                if not isinstance(exc, UpstreamError) or exc.retryable:
                    self.health.circuit(channel.name).failed()
                log.warning(
                    "request %s: stream from channel %s broke off: %s",
                    call.request_id,
                    channel.name,
                    _describe(exc),
                )
                raise

    async def _attempt(
        self, call: Call, route: Route, start: Starter[T]
    ) -> tuple[T, contextlib.AsyncExitStack, LiveChannel]:
        """Run the attempt plan until `start` succeeds on some upstream. The returned stack holds
        the channel's lease (and whatever `start` registered); the caller closes it when done."""
        names = [c.name for c in route.channels]
        prefer = names.index(call.prefer_channel) if call.prefer_channel in names else None
        plan = AttemptPlan(
            route.channels,
            self.health,
            self.policy,
            self._rng,
            prefer=prefer,
            deadline=call.deadline,
            expected=lambda index: self.attempt_times.expected(names[index], call.method),
        )
        last: ProviderError | None = None
        while True:
            step = plan.next()
            if isinstance(step, Wait):
                await self._backoff(call, step.seconds)
                continue
            if isinstance(step, GiveUp):
                raise _final(call, last or _nothing_available(route, step)) from None
            channel = self._begin(call, route, step)
            stack = contextlib.AsyncExitStack()
            try:
                if step.wait:
                    await self._backoff(call, step.wait)
                await stack.enter_async_context(channel.lease())
                async with self._upstream(call, channel.name, learn=True):
                    result = await start(
                        channel.providers[step.key], self._upstream_call(call, route, channel), stack
                    )
            except ProviderError as exc:
                await stack.aclose()
                last = exc
                if self._failed(call, plan, step, channel, exc) == "client_error":
                    raise _final(call, exc) from None
                continue
            except BaseException:
                await stack.aclose()
                plan.record(step, "abandoned")
                raise
            plan.record(step, "ok")
            if call.prefer_channel is not None:
                call.affinity = "kept" if channel.name == call.prefer_channel else "broken"
            return result, stack, channel

    async def _backoff(self, call: Call, seconds: float) -> None:
        began = self._clock()
        try:
            await self._sleep(seconds)
        finally:
            call.backoff_seconds += self._clock() - began

    @contextlib.asynccontextmanager
    async def _upstream(self, call: Call, channel: str, *, learn: bool = False) -> AsyncIterator[None]:
        """Time spent waiting on an upstream (Server-Timing); with `learn`, a successful
        attempt's duration teaches the deadline check how long this channel takes."""
        began = self._clock()
        try:
            yield
        finally:
            spent = self._clock() - began
            call.upstream_seconds += spent
        if learn:
            self.attempt_times.observe(channel, call.method, spent)

    # --- helpers ------------------------------------------------------------------------------

    def _route(self, call: Call) -> Route:
        route = self.registry.snapshot().route(call.model_id)
        if route is None:  # the channel set changed since the route checked the model
            raise UpstreamError(model_not_found(call.model_id), retryable=False)
        return route

    @staticmethod
    def _begin(call: Call, route: Route, step: Try) -> LiveChannel:
        channel = route.channels[step.channel]
        call.attempts += 1
        call.channel = channel.name
        return channel

    @staticmethod
    def _upstream_call(call: Call, route: Route, channel: LiveChannel) -> Call:
        name = channel.config.upstream_model(route.target, route.model.id)
        return call if name == call.model_id else dataclasses.replace(call, model_id=name)

    def _failed(
        self, call: Call, plan: AttemptPlan, step: Try, channel: LiveChannel, exc: ProviderError
    ) -> Outcome:
        outcome = _judge(exc)
        retry_after = exc.retry_after if isinstance(exc, UpstreamError) else None
        plan.record(step, outcome, retry_after)
        keys = len(channel.key_ids)
        log.warning(
            "request %s: attempt %d on channel %s (key %d of %d) failed: %s",
            call.request_id,
            call.attempts,
            channel.name,
            step.key + 1,
            keys,
            _describe(exc),
        )
        return outcome


async def _generate(provider: Provider, call: Call, stack: contextlib.AsyncExitStack) -> Answer:
    return await provider.generate(call)


async def _open_stream(
    provider: Provider, call: Call, stack: contextlib.AsyncExitStack
) -> tuple[AsyncIterator[bytes], bytes | None]:
    """Start the upstream stream and wait for its first event (errors up to here can be retried)."""
    events = provider.stream(call)
    closer = getattr(events, "aclose", None)
    if closer is not None:
        stack.push_async_callback(closer)
    try:
        return events, await events.__anext__()
    except StopAsyncIteration:
        return events, None


async def _first(events: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[bytes]) -> AsyncGenerator[None, None]:
    """Close a provider's event generator when we are done, at once (not at garbage collection)."""
    try:
        yield
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()


def _final(call: Call, exc: ProviderError) -> ProviderError:
    """The error the client gets, labelled like a success with attempts and channel."""
    if isinstance(exc, UpstreamTimeout):
        error = ApiError(504, "The upstream did not answer in time.", "DEADLINE_EXCEEDED")
        exc = UpstreamError(error, retryable=True)
    if isinstance(exc, UpstreamError):
        exc.error.headers["x-bananagate-attempts"] = str(max(call.attempts, 1))
        if call.channel:
            exc.error.headers["x-bananagate-channel"] = call.channel
    return exc


def _judge(exc: ProviderError) -> Outcome:
    if isinstance(exc, UpstreamKeyRejected):
        return "key_rejected"
    if isinstance(exc, UpstreamError):
        if not exc.retryable:
            return "client_error"
        return "rate_limited" if exc.error.code == 429 else "failed"
    return "failed"  # timeouts and anything else transport-shaped


def _describe(exc: ProviderError) -> str:
    if isinstance(exc, UpstreamError):
        return f"{exc.error.code} {exc.error.status}: {exc.error.message[:300]}"
    return str(exc) or type(exc).__name__


def _nothing_available(route: Route, step: GiveUp) -> UpstreamError:
    """The error when no upstream could even be tried."""
    delay = step.retry_after
    if step.reason == "cooling":
        message = f"Every upstream key for {route.target} is cooling down after rate limits; retry later."
        return UpstreamError(resource_exhausted(message, delay), retryable=True, retry_after=delay)
    if step.reason == "keys-rejected":
        names = ", ".join(repr(c.name) for c in route.channels)
        message = f"Upstream channel(s) {names} rejected their keys; check the channel configuration."
        return UpstreamError(ApiError(502, message, "UNAVAILABLE"), retryable=True)
    details = [{"@type": RETRY_INFO_TYPE, "retryDelay": format_duration(round(delay, 3))}] if delay else None
    message = f"No upstream channel for {route.target} is available right now; retry later."
    return UpstreamError(ApiError(503, message, "UNAVAILABLE", details), retryable=True, retry_after=delay)


def build_router(settings: Settings, store: Callable[[], Store]) -> ModelRouter:
    """The router for a server: config-file channels plus database channels (reloaded live).

    Raises ConfigError for an invalid config file, so a bad file stops start-up.
    """
    path = settings.resolved_config_path()
    config = load_config(path) if path is not None else GatewayConfig()
    ciphers: list[KeyCipher] = []

    def cipher() -> KeyCipher:
        if not ciphers:  # only needed (and only looked for) once the database has channels
            ciphers.append(KeyCipher.load(settings.secret_key, settings.data_dir, create=False))
        return ciphers[0]

    registry = ChannelRegistry(
        config,
        load_database=database_loader(store, cipher),
        emulator=EmulatorOptions(settings.emulator_faults, settings.max_image_pixels),
    )
    return ModelRouter(registry=registry)
