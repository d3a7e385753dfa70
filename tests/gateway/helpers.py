"""Shared by the gateway acceptance tests: real curl runs, test images, envelope checks."""

from __future__ import annotations

import base64
import io
import json
import random
import shutil
import struct
import subprocess
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.conftest import Gateway

FLASH_25 = "gemini-2.5-flash-image"
PRO_3 = "gemini-3-pro-image-preview"
FLASH_31 = "gemini-3.1-flash-image-preview"

CURL = shutil.which("curl")
# Linux refuses a single argv string longer than this (MAX_ARG_STRLEN): image bodies must use -d @file.
MAX_ARG_STRLEN = 128 * 1024

# Protocol reference §6.2–6.4: the published output tables, copied independently of catalog.py so
# a wrong catalog entry fails the sweep. (The 3.1 Flash 512/21:9 cell is published as 792x168, a
# typo for 792x336: every other 512 cell is half of 1K; the gateway serves 792x336.)
_RATIOS_10 = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
FLASH_25_TABLE: dict[str, dict[str, tuple[int, int]]] = {
    r: {"1K": s}
    for r, s in zip(
        _RATIOS_10,
        [
            (1024, 1024),
            (832, 1248),
            (1248, 832),
            (864, 1184),
            (1184, 864),
            (896, 1152),
            (1152, 896),
            (768, 1344),
            (1344, 768),
            (1536, 672),
        ],
        strict=True,
    )
}
PRO_3_TABLE: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)},
    "2:3": {"1K": (848, 1264), "2K": (1696, 2528), "4K": (3392, 5056)},
    "3:2": {"1K": (1264, 848), "2K": (2528, 1696), "4K": (5056, 3392)},
    "3:4": {"1K": (896, 1200), "2K": (1792, 2400), "4K": (3584, 4800)},
    "4:3": {"1K": (1200, 896), "2K": (2400, 1792), "4K": (4800, 3584)},
    "4:5": {"1K": (928, 1152), "2K": (1856, 2304), "4K": (3712, 4608)},
    "5:4": {"1K": (1152, 928), "2K": (2304, 1856), "4K": (4608, 3712)},
    "9:16": {"1K": (768, 1376), "2K": (1536, 2752), "4K": (3072, 5504)},
    "16:9": {"1K": (1376, 768), "2K": (2752, 1536), "4K": (5504, 3072)},
    "21:9": {"1K": (1584, 672), "2K": (3168, 1344), "4K": (6336, 2688)},
}
FLASH_31_TABLE: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"512": (512, 512), "1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)},
    "1:4": {"512": (256, 1024), "1K": (512, 2048), "2K": (1024, 4096), "4K": (2048, 8192)},
    "1:8": {"512": (192, 1536), "1K": (384, 3072), "2K": (768, 6144), "4K": (1536, 12288)},
    "2:3": {"512": (424, 632), "1K": (848, 1264), "2K": (1696, 2528), "4K": (3392, 5056)},
    "3:2": {"512": (632, 424), "1K": (1264, 848), "2K": (2528, 1696), "4K": (5056, 3392)},
    "3:4": {"512": (448, 600), "1K": (896, 1200), "2K": (1792, 2400), "4K": (3584, 4800)},
    "4:1": {"512": (1024, 256), "1K": (2048, 512), "2K": (4096, 1024), "4K": (8192, 2048)},
    "4:3": {"512": (600, 448), "1K": (1200, 896), "2K": (2400, 1792), "4K": (4800, 3584)},
    "4:5": {"512": (464, 576), "1K": (928, 1152), "2K": (1856, 2304), "4K": (3712, 4608)},
    "5:4": {"512": (576, 464), "1K": (1152, 928), "2K": (2304, 1856), "4K": (4608, 3712)},
    "8:1": {"512": (1536, 192), "1K": (3072, 384), "2K": (6144, 768), "4K": (12288, 1536)},
    "9:16": {"512": (384, 688), "1K": (768, 1376), "2K": (1536, 2752), "4K": (3072, 5504)},
    "16:9": {"512": (688, 384), "1K": (1376, 768), "2K": (2752, 1536), "4K": (5504, 3072)},
    "21:9": {"512": (792, 336), "1K": (1584, 672), "2K": (3168, 1344), "4K": (6336, 2688)},
}
# model id -> (published table, output MIME type, Pillow format)
PUBLISHED: dict[str, tuple[dict[str, dict[str, tuple[int, int]]], str, str]] = {
    FLASH_25: (FLASH_25_TABLE, "image/png", "PNG"),
    "gemini-2.5-flash-image-preview": (FLASH_25_TABLE, "image/png", "PNG"),
    PRO_3: (PRO_3_TABLE, "image/jpeg", "JPEG"),
    FLASH_31: (FLASH_31_TABLE, "image/jpeg", "JPEG"),
}


# --- images ------------------------------------------------------------------------------------


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A PNG of random pixels: incompressible, so its Base64 is as large as a real photo's."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def solid_png(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A ~70-byte valid PNG whose header claims width×height RGB pixels (10 GB once decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def decode(data: bytes) -> Image.Image:
    """Fully decode image bytes (not just the header)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- requests and responses ---------------------------------------------------------------------


def generate_path(model: str, method: str = "generateContent", version: str = "v1beta") -> str:
    return f"/{version}/models/{model}:{method}"


def text_body(prompt: str = "A banana wearing sunglasses", **image_config: str) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"parts": [{"text": prompt}]}]}
    if image_config:
        body["generationConfig"] = {"imageConfig": image_config}
    return body


def images_of(response: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(mimeType, bytes) of every inline image of the first candidate, accepting either casing."""
    out = []
    for part in response["candidates"][0]["content"].get("parts", []):
        blob = part.get("inlineData") or part.get("inline_data")
        if blob:
            mime = blob.get("mimeType") or blob.get("mime_type")
            out.append((mime, base64.b64decode(blob["data"], validate=True)))
    return out


def the_image(response: dict[str, Any]) -> tuple[str, Image.Image]:
    images = images_of(response)
    assert len(images) == 1, f"expected one image, got {len(images)}"
    mime, data = images[0]
    return mime, decode(data)


def assert_envelope(response: httpx.Response | CurlResult, code: int, status: str | None = None) -> str:
    """A Google error envelope with this code; returns its message."""
    assert response.status_code == code, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("x-request-id"), response.headers
    assert "Traceback" not in response.text and 'File "' not in response.text, response.text
    body = json.loads(response.text)
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error["status"], str) and error["status"].isupper(), error
    if status is not None:
        assert error["status"] == status, error
    return str(error["message"])


# --- curl ----------------------------------------------------------------------------------------


@dataclass
class CurlResult:
    status_code: int
    headers: dict[str, str]
    content: bytes
    elapsed: float
    argv: list[str] = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def curl(args: list[str], workdir: Path, *, timeout: float = 180) -> CurlResult:
    """Run `curl -s -S ARGS` as a user would, capturing status, headers and body through files.

    `workdir` holds the body files (`-d @file` paths are relative to it) and the captured output.
    """
    assert CURL, "curl is not installed"
    tag = uuid.uuid4().hex
    out, head = workdir / f"out-{tag}", workdir / f"head-{tag}"
    argv = [CURL, "-s", "-S", "-o", str(out), "-D", str(head), "-w", "%{http_code}", *args]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"curl failed ({proc.returncode}): {proc.stderr}\n{argv[:12]}"
    headers: dict[str, str] = {}
    # -D keeps every response head (a `100 Continue` first, if any); the last one is the answer.
    for block in head.read_bytes().decode(errors="replace").split("\r\n\r\n"):
        lines = [line for line in block.split("\r\n") if line]
        if lines and lines[0].startswith("HTTP/") and not lines[0].split()[1].startswith("1"):
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
    content = out.read_bytes() if out.exists() else b""
    for path in (out, head):
        path.unlink(missing_ok=True)
    return CurlResult(int(proc.stdout.strip()), headers, content, elapsed, argv)


def curl_post(
    gateway: Gateway,
    path: str,
    body: dict[str, Any] | bytes | Path,
    workdir: Path,
    *,
    auth: str | None = "authorization",
    key: str | None = None,
    extra: list[str] | None = None,
) -> CurlResult:
    """POST like the guide: `-H "Authorization: $KEY" -H "Content-Type: application/json" -d ...`.

    `auth` is one of AUTH_STYLES (or None for no key). A dict or bytes body goes inline when it
    fits in one argument, otherwise (and always for a Path) through `-d @file`.
    """
    key = gateway.key if key is None else key
    url = gateway.url + path
    args = ["-X", "POST"]
    if auth == "query":
        url += ("&" if "?" in url else "?") + f"key={key}"
    elif auth is not None:
        args += ["-H", auth_header(auth, key)]
    args += ["-H", "Content-Type: application/json"]
    if isinstance(body, Path):
        args += ["-d", f"@{body.name}"]
    else:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if len(raw) < MAX_ARG_STRLEN // 2:
            args += ["-d", raw.decode()]
        else:
            file = workdir / f"body-{uuid.uuid4().hex}.json"
            file.write_bytes(raw)
            args += ["-d", f"@{file.name}"]
    return curl([*args, *(extra or []), url], workdir)


AUTH_STYLES = ("authorization", "bearer", "x-goog-api-key", "query")


def auth_header(style: str, key: str) -> str:
    if style == "authorization":
        return f"Authorization: {key}"
    if style == "bearer":
        return f"Authorization: Bearer {key}"
    if style == "x-goog-api-key":
        return f"x-goog-api-key: {key}"
    raise ValueError(style)


# --- the server process ---------------------------------------------------------------------------


def proc_status(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field_name)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (Linux `clear_refs` 5); False when the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def wait_for_log(gateway: Gateway, needles: list[str], *, start: int = 0, timeout: float = 15) -> str:
    """The server log (from byte `start`) once it contains every needle; fails after `timeout`.

    The access line is written when the response has been sent, so a client can see the answer
    a moment before the line reaches the file.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = gateway.log_path.read_bytes()[start:].decode(errors="replace")
        missing = [n for n in needles if n not in text]
        if not missing:
            return text
        assert time.monotonic() < deadline, f"not in the server log after {timeout}s: {missing}"
        time.sleep(0.05)


def access_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "bananagate.access" in line]
