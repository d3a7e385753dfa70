"""Wire models of `generateContent` requests (protocol reference §3).

Parsing is lenient the way proto3 JSON is: snake_case and camelCase at every level, enums in any
case, Base64 in either alphabet with or without padding. Fields we do not model are kept (a
gateway must not lose what it does not understand) and dumped back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_serializer
from pydantic.alias_generators import to_camel

from bananagate.protocol import base64codec


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


CaseInsensitiveName = Annotated[str, BeforeValidator(_upper)]


class WireModel(BaseModel):
    """Base of every wire object: camelCase aliases, either casing accepted, extras kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
        # Pydantic must not coerce numbers to strings: `"text": 5` is a client mistake.
        coerce_numbers_to_str=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """camelCase JSON-ready dict without absent fields; unknown fields come back as they were."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Blob(WireModel):
    mime_type: str | None = None
    data: str | None = None

    @field_serializer("data")
    def _canonical_data(self, value: str | None) -> str | None:
        return None if value is None else base64codec.canonical(value)


class FileData(WireModel):
    mime_type: str | None = None
    file_uri: str | None = None


class Part(WireModel):
    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    thought: bool | None = None
    thought_signature: str | None = None

    @field_serializer("thought_signature")
    def _canonical_signature(self, value: str | None) -> str | None:
        return None if value is None else base64codec.canonical(value)

    def has_data(self) -> bool:
        """True when the part carries one of the `data` oneof members (modelled or not)."""
        if self.text is not None or self.inline_data is not None or self.file_data is not None:
            return True
        extra = self.model_extra or {}
        return any(extra.get(k) is not None for k in _OTHER_DATA_MEMBERS)


_OTHER_DATA_MEMBERS = (
    "functionCall",
    "function_call",
    "functionResponse",
    "function_response",
    "executableCode",
    "executable_code",
    "codeExecutionResult",
    "code_execution_result",
)


class Content(WireModel):
    role: str | None = None
    parts: list[Part] = Field(default_factory=list)


class ImageConfig(WireModel):
    aspect_ratio: str | None = None
    image_size: str | None = None


class ThinkingConfig(WireModel):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: CaseInsensitiveName | None = None


class GenerationConfig(WireModel):
    response_modalities: list[CaseInsensitiveName] | None = None
    image_config: ImageConfig | None = None
    thinking_config: ThinkingConfig | None = None
    candidate_count: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_mime_type: str | None = None


class SafetySetting(WireModel):
    category: CaseInsensitiveName | None = None
    threshold: CaseInsensitiveName | None = None


class GenerateContentRequest(WireModel):
    contents: list[Content] = Field(default_factory=list)
    system_instruction: Content | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: dict[str, Any] | None = None
    cached_content: str | None = None
    service_tier: str | None = None
    # Set by lean parsing (protocol/lean.py): where the inline images' Base64 sits in the
    # original body, one span per `inline_data` of `contents` in order; their `data` is empty here.
    _elided: tuple[tuple[int, int], ...] = PrivateAttr(default=())

    @property
    def elided_spans(self) -> tuple[tuple[int, int], ...]:
        """Spans of the Base64 left in the body by lean parsing; empty for a full parse."""
        return self._elided

    # --- the parsed view routing, pricing and the emulator need -------------------------------

    @property
    def aspect_ratio(self) -> str | None:
        gc = self.generation_config
        return gc.image_config.aspect_ratio if gc and gc.image_config else None

    @property
    def image_size(self) -> str | None:
        gc = self.generation_config
        return gc.image_config.image_size if gc and gc.image_config else None

    @property
    def response_modalities(self) -> list[str]:
        gc = self.generation_config
        if gc and gc.response_modalities:
            return list(gc.response_modalities)
        return ["TEXT", "IMAGE"]

    @property
    def include_thoughts(self) -> bool:
        gc = self.generation_config
        return bool(gc and gc.thinking_config and gc.thinking_config.include_thoughts)

    def input_images(self) -> list[InputImage]:
        """Images the client sent in its own (non-model) turns, in order."""
        images: list[InputImage] = []
        for ci, content in enumerate(self.contents):
            if (content.role or "user").lower() == "model":
                continue
            for pi, part in enumerate(content.parts):
                if part.inline_data is not None:
                    images.append(
                        InputImage(
                            path=f"contents[{ci}].parts[{pi}].inline_data",
                            mime_type=part.inline_data.mime_type or "",
                            data=part.inline_data.data or "",
                            uri=None,
                        )
                    )
                elif part.file_data is not None:
                    images.append(
                        InputImage(
                            path=f"contents[{ci}].parts[{pi}].file_data",
                            mime_type=part.file_data.mime_type or "",
                            data=None,
                            uri=part.file_data.file_uri,
                        )
                    )
        return images

    def prompt_text(self) -> str:
        """Text of the last user turn (what a person would call the prompt)."""
        for content in reversed(self.contents):
            if (content.role or "user").lower() != "model":
                texts = [p.text for p in content.parts if p.text and not p.thought]
                return "\n".join(texts)
        return ""


@dataclass(frozen=True, slots=True)
class InputImage:
    """One image part of a request: inline Base64 text (undecoded) or a file URI."""

    path: str
    mime_type: str
    data: str | None
    uri: str | None
