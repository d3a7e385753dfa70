"""Multi-turn editing: a conversation whose history is resent each turn.

Gemini 3 image models sign their answers (`thoughtSignature`) and expect the signatures back,
unchanged, on later turns; without them a follow-up edit loses its context or is refused. So the
model's content is stored exactly as it arrived (parts, thought parts, signatures, even the key
casing) and echoed verbatim.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bananagate.client.errors import NoImageError
from bananagate.client.inputs import Images, load_images
from bananagate.client.request import HttpRequest, user_turn
from bananagate.client.result import GenerateResult

if TYPE_CHECKING:
    from bananagate.client.aio import AsyncClient
    from bananagate.client.base import ClientBase
    from bananagate.client.sync import Client


def model_turn(content: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model's `Content` as history: verbatim, with `role: model` when the server left it out."""
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        return None
    turn = copy.deepcopy(dict(content))
    turn["role"] = "model"
    return turn


class ChatCore:
    """History and request building; the sessions add only the sending."""

    def __init__(
        self,
        client: ClientBase,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self._client = client
        self.model = model or client.config.default_model
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self._history: list[dict[str, Any]] = list(history or [])

    @property
    def history(self) -> list[dict[str, Any]]:
        """The conversation as `Content` dicts (user and model turns), oldest first."""
        return list(self._history)

    def build_request(
        self,
        prompt: str,
        images: Images | None = None,
        *,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[HttpRequest, dict[str, Any]]:
        """The request the next turn sends (history + this turn) and the new user turn."""
        turn = user_turn(prompt, load_images(images))
        request = self._client.build_request(
            [*self._history, turn],
            model=self.model,
            aspect_ratio=aspect_ratio or self.aspect_ratio,
            image_size=image_size or self.image_size,
            headers=headers,
        )
        return request, turn

    def _record(self, turn: dict[str, Any], result: GenerateResult) -> None:
        # A text-only answer (the model asked a question, say) is kept so the talk can go on;
        # an empty one (blocked) is dropped along with its prompt, so it can be rephrased.
        answer = model_turn(result.content)
        if answer is not None:
            self._history.extend([turn, answer])


class ChatSession(ChatCore):
    """A conversation over a `Client`. `send` raises NoImageError like `Client.generate`, after
    recording any text answer in the history."""

    _client: Client

    def send(
        self,
        prompt: str,
        images: Images | None = None,
        *,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GenerateResult:
        request, turn = self.build_request(
            prompt, images, aspect_ratio=aspect_ratio, image_size=image_size, headers=headers
        )
        try:
            result = self._client.send(request)
        except NoImageError as exc:
            self._record(turn, exc.result)
            raise
        self._record(turn, result)
        return result


class AsyncChatSession(ChatCore):
    """A conversation over an `AsyncClient`."""

    _client: AsyncClient

    async def send(
        self,
        prompt: str,
        images: Images | None = None,
        *,
        aspect_ratio: str | None = None,
        image_size: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GenerateResult:
        request, turn = self.build_request(
            prompt, images, aspect_ratio=aspect_ratio, image_size=image_size, headers=headers
        )
        try:
            result = await self._client.send(request)
        except NoImageError as exc:
            self._record(turn, exc.result)
            raise
        self._record(turn, result)
        return result
