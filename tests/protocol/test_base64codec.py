import base64

import pytest
from hypothesis import given
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
