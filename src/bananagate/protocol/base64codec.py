"""Base64 as proto3 JSON `bytes` fields carry it: standard or URL-safe alphabet, padded or not.

Validation never allocates the decoded bytes: a gateway that only forwards an image must not pay
for decoding it.
"""

from __future__ import annotations

import base64
import binascii
import re

# Either alphabet (clients mix them: the Python SDK sends URL-safe), optional padding.
_WHITESPACE = re.compile(r"[\s]+")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"


def is_valid_base64(value: str) -> bool:
    """True when `value` is Base64 in either alphabet, padded or unpadded, with no other characters."""
    # `bytes.translate` deleting the alphabet runs at memory speed (a regex walks ~4x slower):
    # on a 1.4 MB image that is ~1 ms instead of ~4 ms, on the event loop of every request.
    if not value.isascii():
        return False
    stripped = value.rstrip("=")
    pad = len(value) - len(stripped)
    if pad > 2 or len(stripped) % 4 == 1:
        return False
    if stripped.encode("ascii").translate(None, _ALPHABET):
        return False
    # Padding, when present, must complete the last quantum.
    return not (pad and len(value) % 4 != 0)


# What `\s` matches in an ASCII string.
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def has_whitespace(value: str) -> bool:
    # A regex search walks a 20 MB image string at ~70 MB/s on the event loop; for ASCII text
    # (all valid Base64) a few substring searches give the same answer ~50 times faster.
    if value.isascii():
        return any(c in value for c in _ASCII_WHITESPACE)
    return _WHITESPACE.search(value) is not None


def decode(value: str) -> bytes:
    """Decode lenient Base64 (either alphabet, any padding, embedded whitespace) to bytes.

    Raises ValueError when the text is not Base64.
    """
    if len(value) % 4 == 0 and "-" not in value and "_" not in value:
        # The common case (standard, padded): one strict C pass, no copies of the text.
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except binascii.Error:
            pass  # whitespace or something else: the lenient path below decides
    text = _WHITESPACE.sub("", value) if has_whitespace(value) else value
    if not is_valid_base64(text):
        raise ValueError("not base64")
    text = text.rstrip("=").translate(_URLSAFE_TO_STD)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:  # pragma: no cover - guarded by is_valid_base64
        raise ValueError(str(exc)) from exc


def encode(data: bytes) -> str:
    """Standard, padded Base64: what every response we produce carries."""
    return base64.b64encode(data).decode("ascii")


def canonical(value: str) -> str:
    """The standard padded form of lenient Base64 text, without decoding when already canonical."""
    text = _WHITESPACE.sub("", value) if has_whitespace(value) else value
    if "-" not in text and "_" not in text and len(text) % 4 == 0:
        return text
    text = text.rstrip("=").translate(_URLSAFE_TO_STD)
    return text + "=" * (-len(text) % 4)


def decoded_length(value: str) -> int:
    """Number of bytes `value` decodes to, computed from its length alone."""
    text = value.rstrip("=")
    return (len(text) * 3) // 4
