"""Which provider serves a model. For now every catalog model goes to one provider (the emulator
by default); channels with priorities and failover replace this behind the same method."""

from __future__ import annotations

from bananagate.protocol.catalog import MODELS, ImageModel, find_model
from bananagate.providers.base import Provider


class ModelRouter:
    def __init__(self, default: Provider) -> None:
        self.default = default

    def models(self) -> tuple[ImageModel, ...]:
        return MODELS

    def find(self, model_id: str) -> ImageModel | None:
        return find_model(model_id)

    def provider_for(self, model: ImageModel) -> Provider:
        return self.default

    async def aclose(self) -> None:
        await self.default.aclose()
