"""Builders for `GenerateContentResponse` JSON (protocol reference §4): camelCase, standard padded
Base64, `role: "model"`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bananagate.protocol import base64codec


@dataclass(slots=True)
class Usage:
    """`usageMetadata` in numbers; image tokens are counted apart so pricing can tell them from text."""

    prompt_tokens: int = 0
    prompt_image_tokens: int = 0
    candidates_tokens: int = 0
    candidates_image_tokens: int = 0
    thoughts_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.candidates_tokens + self.thoughts_tokens

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": self.candidates_tokens,
            "totalTokenCount": self.total_tokens,
        }
        prompt_details = [{"modality": "TEXT", "tokenCount": self.prompt_tokens - self.prompt_image_tokens}]
        if self.prompt_image_tokens:
            prompt_details.append({"modality": "IMAGE", "tokenCount": self.prompt_image_tokens})
        out["promptTokensDetails"] = prompt_details
        cand_details = []
        text_tokens = self.candidates_tokens - self.candidates_image_tokens
        if text_tokens:
            cand_details.append({"modality": "TEXT", "tokenCount": text_tokens})
        if self.candidates_image_tokens:
            cand_details.append({"modality": "IMAGE", "tokenCount": self.candidates_image_tokens})
        if cand_details:
            out["candidatesTokensDetails"] = cand_details
        if self.thoughts_tokens:
            out["thoughtsTokenCount"] = self.thoughts_tokens
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> Usage:
        """Read `usageMetadata` in either casing; missing numbers count as 0."""
        if not data:
            return cls()

        def num(*keys: str) -> int:
            for k in keys:
                v = data.get(k)
                if v is not None:
                    try:
                        return int(v)
                    except (TypeError, ValueError):
                        return 0
            return 0

        def image_tokens(*keys: str) -> int:
            for k in keys:
                details = data.get(k)
                if isinstance(details, list):
                    return sum(
                        int(d.get("tokenCount", d.get("token_count", 0)) or 0)
                        for d in details
                        if isinstance(d, dict) and str(d.get("modality", "")).upper() == "IMAGE"
                    )
            return 0

        return cls(
            prompt_tokens=num("promptTokenCount", "prompt_token_count"),
            prompt_image_tokens=image_tokens("promptTokensDetails", "prompt_tokens_details"),
            candidates_tokens=num("candidatesTokenCount", "candidates_token_count"),
            candidates_image_tokens=image_tokens("candidatesTokensDetails", "candidates_tokens_details"),
            thoughts_tokens=num("thoughtsTokenCount", "thoughts_token_count"),
        )


def text_part(text: str, *, thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    return part


def image_part(
    data: bytes, mime_type: str, *, thought: bool = False, thought_signature: bytes | None = None
) -> dict[str, Any]:
    part: dict[str, Any] = {"inlineData": {"mimeType": mime_type, "data": base64codec.encode(data)}}
    if thought:
        part["thought"] = True
    if thought_signature is not None:
        part["thoughtSignature"] = base64codec.encode(thought_signature)
    return part


@dataclass(slots=True)
class Candidate:
    parts: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = "STOP"
    finish_message: str | None = None

    def to_wire(self) -> dict[str, Any]:
        content: dict[str, Any] = {"role": "model"}
        if self.parts:
            content["parts"] = self.parts
        out: dict[str, Any] = {"content": content}
        if self.finish_reason:
            out["finishReason"] = self.finish_reason
        if self.finish_message:
            out["finishMessage"] = self.finish_message
        out["index"] = 0
        return out


def generate_response(
    candidate: Candidate, usage: Usage, *, model_version: str, response_id: str
) -> dict[str, Any]:
    return {
        "candidates": [candidate.to_wire()],
        "usageMetadata": usage.to_wire(),
        "modelVersion": model_version,
        "responseId": response_id,
    }
