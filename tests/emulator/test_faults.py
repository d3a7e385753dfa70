"""Every fault directive, through the provider, as a client would see it."""

from __future__ import annotations

import time

import orjson
import pytest

from bananagate.protocol.errors import ApiError, retry_delay_of
from bananagate.providers.base import UpstreamError
from bananagate.providers.emulator import EmulatorProvider

from .helpers import FLASH_25, PRO_3, image_of, make_call, parts_of, request_body

H = "x-bananagate-emulate"


def _call(directive: str = "", *, prompt: str = "a banana", model_id: str = FLASH_25, **kw):
    return make_call(model_id, request_body(prompt, **kw), headers={H: directive} if directive else {})


async def _fail(call, provider: EmulatorProvider | None = None) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await (provider or EmulatorProvider()).generate(call)
    return info.value


async def test_429_carries_retry_info_and_retry_after() -> None:
    err = await _fail(_call("status=429; retry-delay=2s"))
    assert err.retryable is True and err.retry_after == 2.0
    assert err.error.code == 429 and err.error.status == "RESOURCE_EXHAUSTED"
    assert err.error.message == "Resource has been exhausted (e.g. check quota)."
    assert retry_delay_of(err.error.to_dict()) == 2.0
    assert err.error.to_dict()["error"]["details"][0]["retryDelay"] == "2s"
    assert err.error.headers["retry-after"] == "2"


async def test_429_default_delay_is_one_second() -> None:
    err = await _fail(_call("status=429"))
    assert err.retry_after == 1.0
    assert retry_delay_of(err.error.to_dict()) == 1.0


@pytest.mark.parametrize(
    ("code", "status", "retryable", "message"),
    [
        (
            500,
            "INTERNAL",
            True,
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        ),
        (503, "UNAVAILABLE", True, "The model is overloaded. Please try again later."),
        (504, "DEADLINE_EXCEEDED", True, None),
        (502, "UNAVAILABLE", True, None),
        (408, "DEADLINE_EXCEEDED", True, None),
        (400, "INVALID_ARGUMENT", False, None),
        (403, "PERMISSION_DENIED", False, None),
        (404, "NOT_FOUND", False, None),
        (418, "UNKNOWN", False, None),
        (599, "UNKNOWN", True, None),
    ],
)
async def test_status_codes(code: int, status: str, retryable: bool, message: str | None) -> None:
    err = await _fail(_call(f"status={code}"))
    assert err.error.code == code
    assert err.error.status == status
    assert err.retryable is retryable
    if message:
        assert err.error.message == message
    envelope = orjson.loads(err.error.to_json())
    assert list(envelope) == ["error"] and envelope["error"]["code"] == code
    if code != 429:
        assert err.retry_after is None and not err.error.details


async def test_retry_delay_on_other_retryable_status() -> None:
    err = await _fail(_call("status=503;retry-delay=1500ms"))
    assert err.retry_after == 1.5
    assert retry_delay_of(err.error.to_dict()) == 1.5
    assert err.error.headers["retry-after"] == "2"


async def test_header_name_is_case_insensitive() -> None:
    call = make_call(FLASH_25, request_body("x"), headers={"X-BananaGate-Emulate": "status=500"})
    assert (await _fail(call)).error.code == 500


async def test_prompt_directive_and_stripping() -> None:
    err = await _fail(_call(prompt="a cat [emulate: status=503]"))
    assert err.error.code == 503

    answer = await EmulatorProvider().generate(_call(prompt="a cat [emulate: delay=0] in a hat"))
    text = parts_of(orjson.loads(answer.body))[0]["text"]
    assert '"a cat in a hat"' in text and "emulate" not in text


async def test_prompt_directive_overrides_header() -> None:
    err = await _fail(_call("status=500", prompt="x [emulate: status=504]"))
    assert err.error.code == 504


async def test_delay_is_measured() -> None:
    start = time.perf_counter()
    await EmulatorProvider().generate(_call("delay=0.4"))
    assert time.perf_counter() - start >= 0.4


async def test_delay_then_error() -> None:
    start = time.perf_counter()
    await _fail(_call("delay=300ms; status=500"))
    assert time.perf_counter() - start >= 0.3


@pytest.mark.parametrize(
    "reason",
    ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "SAFETY", "PROHIBITED_CONTENT", "RECITATION", "OTHER"],
)
async def test_finish_without_parts(reason: str) -> None:
    answer = await EmulatorProvider().generate(_call(f"finish={reason.lower()}", model_id=PRO_3))
    response = orjson.loads(answer.body)
    candidate = response["candidates"][0]
    assert candidate["content"] == {"role": "model"}
    assert candidate["finishReason"] == reason
    assert candidate["finishMessage"].startswith("The model output could not be generated.")
    assert answer.status == 200 and answer.finish_reason == reason and answer.image_count == 0
    assert "candidatesTokensDetails" not in response["usageMetadata"]
    assert response["usageMetadata"]["thoughtsTokenCount"] > 0
    assert answer.usage.candidates_image_tokens == 0


async def test_finish_no_image_is_text_only() -> None:
    answer = await EmulatorProvider().generate(_call("finish=NO_IMAGE"))
    response = orjson.loads(answer.body)
    parts = parts_of(response)
    assert len(parts) == 1 and "NO_IMAGE" in parts[0]["text"]
    assert response["candidates"][0]["finishReason"] == "NO_IMAGE"
    assert [d["modality"] for d in response["usageMetadata"]["candidatesTokensDetails"]] == ["TEXT"]
    assert answer.image_count == 0


async def test_finish_stop_is_normal() -> None:
    answer = await EmulatorProvider().generate(_call("finish=STOP"))
    image_of(orjson.loads(answer.body))


async def test_block_prompt() -> None:
    answer = await EmulatorProvider().generate(_call("block=safety"))
    response = orjson.loads(answer.body)
    assert response["promptFeedback"] == {"blockReason": "SAFETY"}
    assert "candidates" not in response
    assert response["modelVersion"] == FLASH_25 and response["responseId"]
    assert response["usageMetadata"]["promptTokenCount"] >= 1
    assert answer.status == 200 and answer.image_count == 0


async def test_text_only() -> None:
    answer = await EmulatorProvider().generate(_call("text-only", model_id=PRO_3))
    response = orjson.loads(answer.body)
    parts = parts_of(response)
    assert len(parts) == 1 and "text" in parts[0]
    assert response["candidates"][0]["finishReason"] == "STOP"
    assert answer.image_count == 0


async def test_times_then_success() -> None:
    provider = EmulatorProvider()
    call = _call("status=429; retry-delay=0; times=2")
    await _fail(call, provider)
    await _fail(call, provider)
    answer = await provider.generate(call)
    image_of(orjson.loads(answer.body))
    # a different request has its own counter
    await _fail(_call("status=429; retry-delay=0; times=2", prompt="other"), provider)
    # and so does another provider instance (counters are in-process, per provider)
    await _fail(call, EmulatorProvider())


async def test_times_via_prompt_directive() -> None:
    provider = EmulatorProvider()
    call = _call(prompt="item 7 [emulate: status=503, times=1]")
    await _fail(call, provider)
    answer = await provider.generate(call)
    assert '"item 7"' in parts_of(orjson.loads(answer.body))[0]["text"]


@pytest.mark.parametrize(
    "directive",
    [
        "status=200",
        "status=abc",
        "bogus=1",
        "delay=-1",
        "delay=fast",
        "delay=9999",
        "finish=MAYBE",
        "block=NOPE",
        "times=0",
        "times=x",
        "stream-error-after=-1",
        "explode",
        "text-only=perhaps",
    ],
)
async def test_bad_directive_is_a_400(directive: str) -> None:
    with pytest.raises(ApiError) as info:
        await EmulatorProvider().generate(_call(directive))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.message.startswith("Invalid x-bananagate-emulate directive: ")


async def test_bad_prompt_directive_is_a_400() -> None:
    with pytest.raises(ApiError, match="Invalid x-bananagate-emulate directive"):
        await EmulatorProvider().generate(_call(prompt="[emulate: nonsense=1]"))


async def test_faults_disabled_answers_normally() -> None:
    provider = EmulatorProvider(faults_enabled=False)
    for directive in ("status=500", "block=SAFETY", "nonsense!!", "finish=IMAGE_SAFETY"):
        answer = await provider.generate(_call(directive))
        image_of(orjson.loads(answer.body))
    # prompt directives are ordinary text then (and drawn as written)
    answer = await provider.generate(_call(prompt="cat [emulate: status=500]"))
    assert "[emulate: status=500]" in parts_of(orjson.loads(answer.body))[0]["text"]


async def test_stream_error_after_is_ignored_by_generate() -> None:
    answer = await EmulatorProvider().generate(_call("stream-error-after=0; event-delay=1"))
    image_of(orjson.loads(answer.body))
