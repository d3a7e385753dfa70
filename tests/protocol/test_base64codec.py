import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananagate.protocol import base64codec


def variants(data: bytes) -> list[str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return [std, std.rstrip("="), url, url.rstrip("=")]


@given(st.binary(max_size=300))
def test_every_variant_is_valid_and_decodes_to_the_same_bytes(data: bytes) -> None:
    for text in variants(data):
        assert base64codec.is_valid_base64(text)
        assert base64codec.decode(text) == data
        assert base64codec.decoded_length(text) == len(data)


@given(st.binary(max_size=300))
def test_canonical_form_is_standard_padded(data: bytes) -> None:
    expected = base64.b64encode(data).decode()
    for text in variants(data):
        assert base64codec.canonical(text) == expected
    assert base64codec.encode(data) == expected


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=1, max_value=60))
def test_wrapped_base64_with_newlines_decodes(data: bytes, width: int) -> None:
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i : i + width] for i in range(0, len(text), width))
    assert base64codec.decode(wrapped) == data
    assert base64codec.canonical(wrapped) == text


@given(
    st.text(
        alphabet=st.characters(
            blacklist_characters="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="
        ),
        min_size=1,
    )
)
def test_foreign_characters_are_rejected(junk: str) -> None:
    text = "QUJD" + junk
    if junk.strip() == "":
        return  # pure whitespace is tolerated by decode(), covered above
    assert not base64codec.is_valid_base64(text)
    with pytest.raises(ValueError):
        base64codec.decode(text)


@pytest.mark.parametrize(
    "text",
    ["data:image/png;base64,iVBORw0KGgo=", "A", "AAAAA", "AA=A", "AAA==", "====", "AB=="[:3] + "=="],
)
def test_known_bad_values(text: str) -> None:
    assert not base64codec.is_valid_base64(text)


@pytest.mark.parametrize("text", ["", "AA", "AA==", "AAA", "AAA=", "AAAA", "-_-_", "+/+/"])
def test_known_good_values(text: str) -> None:
    assert base64codec.is_valid_base64(text)


# --- the stdlib as an oracle -------------------------------------------------------------------
# What the codec promised before it moved to pybase64, written with `re` and `base64` only: the
# SIMD decoder must accept exactly these texts and give exactly these bytes.

_ORACLE_WS = re.compile(r"\s+")
_ORACLE_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


def oracle_is_valid(value: str) -> bool:
    stripped = value.rstrip("=")
    pad = len(value) - len(stripped)
    if pad > 2 or len(stripped) % 4 == 1 or (pad and len(value) % 4 != 0):
        return False
    return set(stripped) <= _ORACLE_ALPHABET


def oracle_decode(value: str) -> bytes | None:
    text = _ORACLE_WS.sub("", value)
    if not oracle_is_valid(text):
        return None
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# Mostly Base64 characters, so that valid and nearly-valid texts are common.
base64ish = st.text(
    alphabet=st.sampled_from(
        [*"AQgw+/-_=", " ", "\n", "\t", "\x0b", "\x1c", "\u00a0", "\u2028", "!", "é", "."]
    ),
    max_size=40,
)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> str:
    """A real encoding (either alphabet, padded or not) with a few characters changed."""
    data = draw(st.binary(max_size=60))
    text = (base64.urlsafe_b64encode(data) if draw(st.booleans()) else base64.b64encode(data)).decode()
    if draw(st.booleans()):
        text = text.rstrip("=")
    chars = list(text)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        ch = draw(st.sampled_from(list("A=+/-_ \n!\u00a0")))
        if op == "insert":
            chars.insert(at, ch)
        elif chars and at < len(chars):
            if op == "delete":
                del chars[at]
            else:
                chars[at] = ch
    return "".join(chars)


@settings(max_examples=500)
@given(st.one_of(base64ish, mutated_encodings(), st.text(max_size=20)))
def test_codec_agrees_with_the_stdlib_oracle(text: str) -> None:
    expected = oracle_decode(text)
    assert base64codec.is_valid_base64(text) == oracle_is_valid(text)
    if expected is None:
        with pytest.raises(ValueError):
            base64codec.decode(text)
    else:
        assert base64codec.decode(text) == expected
        # Text, not re-encoded bytes: "00==" has stray low bits that a re-encoding would drop.
        standard = _ORACLE_WS.sub("", text).rstrip("=").replace("-", "+").replace("_", "/")
        assert base64codec.canonical(text) == standard + "=" * (-len(standard) % 4)
        assert base64codec.decoded_length(_ORACLE_WS.sub("", text)) == len(expected)


@given(st.binary(max_size=300))
def test_strict_decode_takes_canonical_text_only(data: bytes) -> None:
    std = base64.b64encode(data)
    body = b'{"data":"' + std + b'"}'
    assert base64codec.decode_strict(memoryview(body)[9 : 9 + len(std)]) == data
    for other in {base64.urlsafe_b64encode(data), std.rstrip(b"="), std + b"\n"} - {std}:
        with pytest.raises(ValueError):
            base64codec.decode_strict(other)
