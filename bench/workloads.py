"""The workloads: what one benchmark request looks like, and the files the load generators send."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.payloads import MB, MODEL, noise_png, request_body

PROMPT = "A kitten napping on a sunny windowsill, watercolor"


@dataclass(frozen=True, slots=True)
class Sizes:
    """Payload sizes in bytes (of Base64, i.e. as they travel)."""

    answer: int = int(1.4 * MB)
    image: int = int(1.4 * MB)
    multi_image: int = 7 * MB
    multi_count: int = 3


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    title: str
    stream: bool
    image_sizes: tuple[int, ...]  # Base64 size of each input image

    @property
    def method(self) -> str:
        return "streamGenerateContent" if self.stream else "generateContent"

    @property
    def path(self) -> str:
        query = "?alt=sse" if self.stream else ""
        return f"/v1beta/models/{MODEL}:{self.method}{query}"

    def body(self) -> bytes:
        images = [noise_png(size, seed=10 + i) for i, size in enumerate(self.image_sizes)]
        return request_body(PROMPT, images)


# `multi` last: the memory its 21 MB bodies leave behind would otherwise inflate the RSS of later cells.
WORKLOAD_NAMES = ("t2i", "i2i", "stream", "multi")


def workloads(sizes: Sizes) -> dict[str, Workload]:
    """Every workload, by name, in the order they run."""
    multi_total = sizes.multi_image * sizes.multi_count / MB
    return {
        "t2i": Workload("t2i", "text-to-image (small request, image answer)", False, ()),
        "i2i": Workload("i2i", "image-to-image (image request and answer)", False, (sizes.image,)),
        "stream": Workload("stream", "text-to-image, streamed (?alt=sse)", True, ()),
        "multi": Workload(
            "multi",
            f"{sizes.multi_count} images of {sizes.multi_image / MB:g} MB ({multi_total:g} MB request)",
            False,
            (sizes.multi_image,) * sizes.multi_count,
        ),
    }


def write_bodies(selected: list[Workload], directory: Path) -> dict[str, Path]:
    """Each workload's request body in a file (wrk's Lua script reads it), by workload name."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for workload in selected:
        path = directory / f"{workload.name}.json"
        path.write_bytes(workload.body())
        out[workload.name] = path
    return out
