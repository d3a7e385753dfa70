"""`bananagate channels test`: one minimal request per upstream key, timed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from bananagate.config import ChannelConfig
from bananagate.protocol.catalog import find_model
from bananagate.protocol.errors import ApiError
from bananagate.protocol.validation import parse_and_check
from bananagate.providers.base import Call, ProviderError, UpstreamError
from bananagate.providers.factory import build_channel

# Text only: the cheapest answer an image model gives, and enough to prove key and route work.
PROBE_BODY = orjson.dumps(
    {
        "contents": [{"role": "user", "parts": [{"text": "Reply with the single word: banana"}]}],
        "generationConfig": {"responseModalities": ["TEXT"]},
    }
)


@dataclass
class ProbeResults:
    lines: list[str] = field(default_factory=list)
    ok: bool = True


async def probe_channel(config: ChannelConfig, model_id: str | None, aliases: dict[str, str]) -> ProbeResults:
    results = ProbeResults()
    requested = model_id or (config.models[0] if config.models else sorted(config.served_models())[0])
    target = aliases.get(requested, requested)
    model = find_model(target)
    if model is None or model.id not in config.served_models():
        results.lines.append(f"channel {config.name} does not serve {requested}")
        results.ok = False
        return results
    upstream_name = config.upstream_model(target, model.id)
    built = build_channel(config)
    try:
        for index, provider in enumerate(built.providers):
            call = Call(
                model=model,
                model_id=upstream_name,
                method="generateContent",
                body=PROBE_BODY,
                request=parse_and_check(PROBE_BODY, model),
                request_id="channel-test",
            )
            label = f"{config.name} key {index + 1}/{len(built.providers)} {upstream_name}"
            started = time.perf_counter()
            try:
                answer = await provider.generate(call)
            except (ProviderError, ApiError) as exc:
                elapsed = time.perf_counter() - started
                results.ok = False
                results.lines.append(f"{label}: FAILED in {elapsed:.2f} s: {_explain(exc)}")
                continue
            elapsed = time.perf_counter() - started
            finish = answer.finish_reason or "-"
            results.lines.append(
                f"{label}: {answer.status} OK in {elapsed:.2f} s "
                f"(finishReason {finish}, {answer.image_count} image(s), {answer.usage.total_tokens} tokens)"
            )
    finally:
        await built.aclose()
    return results


def _explain(exc: Exception) -> str:
    # Provider messages are already scrubbed of the channel's keys.
    if isinstance(exc, UpstreamError):
        return f"{exc.error.code} {exc.error.status}: {exc.error.message}"
    if isinstance(exc, ApiError):
        return f"{exc.code} {exc.status}: {exc.message}"
    return str(exc) or type(exc).__name__
