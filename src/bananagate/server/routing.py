"""Which provider serves a model. For now every catalog model goes to one provider (the emulator
by default); channels with priorities, retries and failover replace this behind the same methods."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bananagate.protocol.catalog import MODELS, ImageModel, find_model
from bananagate.providers.base import Answer, Call, Provider


class ModelRouter:
    def __init__(self, default: Provider) -> None:
        self.default = default

    def models(self) -> tuple[ImageModel, ...]:
        return MODELS

    def find(self, model_id: str) -> ImageModel | None:
        return find_model(model_id)

    async def generate(self, call: Call) -> Answer:
        return await self.default.generate(call)

    def stream(self, call: Call) -> AsyncIterator[bytes]:
        return self.default.stream(call)

    async def aclose(self) -> None:
        await self.default.aclose()
