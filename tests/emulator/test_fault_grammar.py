"""The directive parser: canonical round trips, tolerant spelling, and only 400s on garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananagate.protocol.errors import ApiError
from bananagate.providers.emulator.faults import (
    BLOCK_REASONS,
    FINISH_REASONS,
    MAX_COUNT,
    MAX_DURATION,
    Directives,
    parse_directives,
    resolve,
    split_prompt,
)

durations = st.floats(min_value=0.0, max_value=MAX_DURATION, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=1, max_value=MAX_COUNT)

directives = st.builds(
    Directives,
    status=st.none() | st.integers(min_value=400, max_value=599),
    retry_delay=st.none() | durations,
    delay=durations,
    event_delay=durations,
    finish=st.none() | st.sampled_from(sorted(FINISH_REASONS)),
    block=st.none() | st.sampled_from(sorted(BLOCK_REASONS)),
    text_only=st.booleans(),
    times=st.none() | counts,
    stream_error_after=st.none() | st.integers(min_value=0, max_value=MAX_COUNT),
)


@given(directives)
def test_canonical_string_round_trips(d: Directives) -> None:
    assert parse_directives(d.to_string()) == d


def _spellings(d: Directives, draw) -> list[str]:
    """`name=value` items for `d`, each in a randomly chosen (valid) spelling."""

    def name(text: str) -> str:
        text = draw(st.sampled_from([text, text.replace("-", "_")]))
        return "".join(c.upper() if draw(st.booleans()) else c for c in text)

    def seconds(value: float) -> str:
        return draw(st.sampled_from([repr(value), repr(value) + "s", repr(value) + "S"]))

    items = []
    if d.status is not None:
        items.append(f"{name('status')}={d.status}")
    if d.retry_delay is not None:
        items.append(f"{name('retry-delay')}={seconds(d.retry_delay)}")
    if d.delay:
        items.append(f"{name('delay')}={seconds(d.delay)}")
    if d.event_delay:
        items.append(f"{name('event-delay')}={seconds(d.event_delay)}")
    if d.finish:
        items.append(f"{name('finish')}={draw(st.sampled_from([d.finish, d.finish.lower()]))}")
    if d.block:
        items.append(f"{name('block')}={draw(st.sampled_from([d.block, d.block.lower()]))}")
    if d.text_only:
        items.append(draw(st.sampled_from([name("text-only"), f"{name('text-only')}=true"])))
    if d.times is not None:
        items.append(f"{name('times')}={d.times}")
    if d.stream_error_after is not None:
        items.append(f"{name('stream-error-after')}={d.stream_error_after}")
    return items


whitespace = st.text(alphabet=" \t", max_size=2)


@settings(max_examples=60)
@given(directives, st.data())
def test_any_valid_spelling_parses_to_the_value(d: Directives, data: st.DataObject) -> None:
    items = data.draw(st.permutations(_spellings(d, data.draw)))
    text = ""
    for item in items:
        sep = data.draw(st.sampled_from([";", ",", ";;", " ; "]))
        # whitespace anywhere, even inside names and numbers, is ignored
        spaced = "".join(c + data.draw(whitespace) for c in item)
        text += spaced + sep
    assert parse_directives(text) == d


@settings(max_examples=200)
@given(st.text())
def test_garbage_only_ever_raises_the_documented_400(text: str) -> None:
    try:
        result = parse_directives(text)
    except ApiError as exc:
        assert exc.code == 400 and exc.status == "INVALID_ARGUMENT"
        assert exc.message.startswith("Invalid x-bananagate-emulate directive: ")
    else:
        assert isinstance(result, Directives)


_TOKENS = st.sampled_from(
    ["status", "delay", "times", "finish", "block", "text-only", "=", ";", ",", "429", "1.5s", "x", "-", "e9"]
)


@settings(max_examples=200)
@given(st.lists(_TOKENS, max_size=12).map("".join), st.text(max_size=30))
def test_near_miss_directives_and_prompts(header: str, prompt: str) -> None:
    try:
        resolve({"X-Bananagate-Emulate": header}, f"{prompt}[emulate:{header}]")
    except ApiError as exc:
        assert exc.code == 400


@given(directives, st.text(alphabet=st.characters(blacklist_characters="[]"), max_size=40))
def test_prompt_directive_is_found_and_removed(d: Directives, words: str) -> None:
    cleaned, found = split_prompt(f"{words} [emulate: {d.to_string()}] tail")
    assert "emulate" not in cleaned.lower() or "emulate" in words.lower()
    assert cleaned.endswith("tail")
    assert parse_directives(found) == d


def test_examples() -> None:
    assert parse_directives("") == Directives()
    assert parse_directives(" ; , ") == Directives()
    assert parse_directives("status=429; retry-delay=2s; times=1") == Directives(
        status=429, retry_delay=2.0, times=1
    )
    assert parse_directives("delay=1500ms,event_delay=.5") == Directives(delay=1.5, event_delay=0.5)
    assert parse_directives("status=500;status=503").status == 503  # last wins
    assert parse_directives("text-only=false") == Directives()
    assert not Directives().active and Directives(times=1).active
    assert Directives(status=429).retryable and not Directives(status=404).retryable


def test_resolve_merges_header_and_prompt() -> None:
    d, prompt = resolve({"x-bananagate-emulate": "status=500; delay=1"}, "a cat [Emulate: status=503] sat")
    assert d == Directives(status=503, delay=1.0)
    assert prompt == "a cat sat"
    d, prompt = resolve({}, "first [emulate: finish=NO_IMAGE]\nsecond [emulate: times=2]")
    assert d == Directives(finish="NO_IMAGE", times=2)
    assert prompt == "first\nsecond"


@pytest.mark.parametrize(
    "bad",
    [
        "status=399",
        "status=600",
        "status=",
        "=1",
        "delay=1h",
        "delay=300.5",
        "delay=nan",
        "delay=inf",
        "retry-delay=-2",
        "times=1.5",
        f"times={MAX_COUNT + 1}",
        "finish=",
        "block=SAFETY2",
        "weird flag",
    ],
)
def test_bad_values(bad: str) -> None:
    with pytest.raises(ApiError, match="Invalid x-bananagate-emulate directive"):
        parse_directives(bad)


def test_long_garbage_is_truncated_in_the_message() -> None:
    with pytest.raises(ApiError) as info:
        parse_directives("x" * 5000)
    assert len(info.value.message) < 300


@pytest.mark.parametrize("name", ["status", "times", "stream-error-after", "delay"])
def test_huge_numbers_are_a_400_not_a_crash(name: str) -> None:
    with pytest.raises(ApiError):
        parse_directives(f"{name}={'9' * 5000}")
    with pytest.raises(ApiError):
        parse_directives(f"{name}=\u0664\u0662\u0669")  # non-ASCII digits
