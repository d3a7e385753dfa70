"""Prices and cost arithmetic (protocol reference §6.5). Pure: no I/O, no floats.

Money is an `int` of nano-dollars (1e-9 USD, the unit of `google.type.Money.nanos`): exact
under addition, fine enough for per-token prices ($0.30 per 1M tokens is 300 nanos a token),
and it fits a 64-bit column up to $9.2 billion. Prices are written as decimal strings in USD.

A model is billed per input token, per output text/thinking token, and for its output images
either per image token or, when the table has one for the requested `imageSize`, a flat price
per image. The defaults bill the §6.5 per-image list price and nothing else: that makes the most
a call can cost (one image at the requested size) known before it runs, so a hard budget can be
spent to the last cent. Token prices are there for operators who want them (configure them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from bananagate.protocol.catalog import ImageModel
from bananagate.protocol.response import Usage

NANOS_PER_USD = 1_000_000_000
_NANOS_PER_TOKEN_PER_MTOK = Decimal(NANOS_PER_USD) / Decimal(1_000_000)  # USD/1M tokens -> nanos/token
ZERO = Decimal(0)


def to_decimal(value: Decimal | str | int) -> Decimal:
    """A non-negative finite Decimal from a USD amount; floats are refused (they are not exact)."""
    if isinstance(value, (float, bool)):
        raise TypeError("money must be a Decimal, str or int, never a float")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"amount must be finite and not negative: {value!r}")
    return amount


def usd_to_nanos(value: Decimal | str | int) -> int:
    """`"0.039"` -> 39_000_000. More than 9 decimal places is an error, not a silent rounding."""
    scaled = to_decimal(value).scaleb(9)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value!r} has more than 9 decimal places")
    return int(scaled)


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def format_usd(nanos: int) -> str:
    """Plain decimal text without exponent or trailing zeros: 39_000_000 -> `0.039`, 0 -> `0`."""
    return f"{nanos_to_usd(nanos).normalize():f}"


def _token_nanos(tokens: int, usd_per_mtok: Decimal) -> Decimal:
    return Decimal(max(tokens, 0)) * usd_per_mtok * _NANOS_PER_TOKEN_PER_MTOK


def _round(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs, in USD. `per_image` maps an `imageSize` label to a flat price."""

    input_per_mtok: Decimal = ZERO
    text_per_mtok: Decimal = ZERO
    image_per_mtok: Decimal = ZERO
    per_image: Mapping[str, Decimal] = field(default_factory=dict)

    def image_nanos(self, images: int, image_tokens: int, image_size: str) -> Decimal:
        flat = self.per_image.get(image_size)
        if flat is not None:
            return Decimal(images) * flat * NANOS_PER_USD
        return _token_nanos(image_tokens, self.image_per_mtok)

    def to_json(self) -> dict[str, Any]:
        return {
            "input_per_mtok": str(self.input_per_mtok),
            "text_per_mtok": str(self.text_per_mtok),
            "image_per_mtok": str(self.image_per_mtok),
            "per_image": {k: str(v) for k, v in self.per_image.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: ModelPrice | None = None) -> ModelPrice:
        """Fields given in `data` override `base` (so a config can change one number)."""
        known = {"input_per_mtok", "text_per_mtok", "image_per_mtok", "per_image"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown price fields: {', '.join(sorted(unknown))}")
        price = base or cls()
        values: dict[str, Any] = {}
        for name in ("input_per_mtok", "text_per_mtok", "image_per_mtok"):
            if name in data:
                values[name] = to_decimal(data[name])
        if "per_image" in data:
            raw = data["per_image"]
            if not isinstance(raw, Mapping):
                raise ValueError("per_image must map an image size (e.g. 1K) to a price")
            values["per_image"] = {str(k): to_decimal(v) for k, v in raw.items()}
        return replace(price, **values)


def _d(text: str) -> Decimal:
    return Decimal(text)


# §6.5 per-image list prices (standard tier). Image-token prices are the §6.5 per-1M figures,
# used only for sizes without a flat price.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-flash-image": ModelPrice(image_per_mtok=_d("30"), per_image={"1K": _d("0.039")}),
    "gemini-3.1-flash-image-preview": ModelPrice(
        image_per_mtok=_d("60"),
        per_image={"512": _d("0.045"), "1K": _d("0.067"), "2K": _d("0.101"), "4K": _d("0.151")},
    ),
    "gemini-3-pro-image-preview": ModelPrice(
        image_per_mtok=_d("120"),
        per_image={"1K": _d("0.134"), "2K": _d("0.134"), "4K": _d("0.24")},
    ),
}
# The retired preview name is the same model at the same price.
DEFAULT_PRICES["gemini-2.5-flash-image-preview"] = DEFAULT_PRICES["gemini-2.5-flash-image"]


@dataclass(frozen=True, slots=True)
class Charge:
    """The outcome of pricing one answer: what is charged and why."""

    nanos: int
    images: int
    billable: bool  # False when the no-image policy made it free


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by canonical model id, and the policy for answers without an image."""

    models: Mapping[str, ModelPrice] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    # Safety blocks, NO_IMAGE and text-only answers are free unless this is set.
    charge_without_image: bool = False

    def price(self, model: ImageModel) -> ModelPrice:
        """The model's price; a model missing from the table is free (and logged by the caller)."""
        return self.models.get(model.id) or ModelPrice()

    def cost(self, model: ImageModel, usage: Usage, images: int, image_size: str | None) -> Charge:
        """The cost of an answer with this `usageMetadata` and this many final images."""
        if images <= 0 and not self.charge_without_image:
            return Charge(0, 0, billable=False)
        price = self.price(model)
        size = image_size or model.default_image_size
        text_tokens = max(usage.candidates_tokens - usage.candidates_image_tokens, 0) + usage.thoughts_tokens
        # Without a modality breakdown every candidate token of an image answer is an image token.
        image_tokens = usage.candidates_image_tokens
        if images > 0 and image_tokens == 0:
            image_tokens, text_tokens = usage.candidates_tokens, usage.thoughts_tokens
        total = (
            _token_nanos(usage.prompt_tokens, price.input_per_mtok)
            + _token_nanos(text_tokens, price.text_per_mtok)
            + price.image_nanos(images, image_tokens, size)
        )
        return Charge(_round(total), images, billable=True)

    def max_cost(
        self,
        model: ImageModel,
        *,
        images: int,
        image_size: str | None,
        input_tokens: int,
        output_tokens: int,
    ) -> int:
        """An upper bound of `cost` for a call, in nanos: what a reservation holds.

        `input_tokens` and `output_tokens` are bounds the caller derives from the request; they
        only matter when token prices are configured.
        """
        price = self.price(model)
        size = image_size or model.default_image_size
        per_image_tokens = model.image_tokens.get(size, max(model.image_tokens.values(), default=0))
        total = (
            _token_nanos(input_tokens, price.input_per_mtok)
            + _token_nanos(output_tokens, price.text_per_mtok)
            + price.image_nanos(images, images * per_image_tokens, size)
        )
        return _round(total)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> PriceTable:
        """A table with config entries applied on top (unknown fields raise ValueError)."""
        models = dict(self.models)
        for model_id, data in overrides.items():
            models[model_id] = ModelPrice.from_json(data, models.get(model_id))
        return replace(self, models=models)

    def to_json(self) -> dict[str, Any]:
        return {
            "charge_without_image": self.charge_without_image,
            "models": {k: v.to_json() for k, v in sorted(self.models.items())},
        }
