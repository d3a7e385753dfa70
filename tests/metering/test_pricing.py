"""Prices and cost arithmetic: exact integers of nano-dollars, §6.5 defaults, overrides."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bananagate.protocol.catalog import FLASH_25, FLASH_31, PRO_3
from bananagate.protocol.pricing import PriceTable, format_usd, nanos_to_usd, usd_to_nanos
from bananagate.protocol.response import Usage

IMAGE_1290 = Usage(prompt_tokens=12, candidates_tokens=1290, candidates_image_tokens=1290)


def test_money_conversions_are_exact() -> None:
    assert usd_to_nanos("0.039") == 39_000_000
    assert usd_to_nanos(Decimal("0.000000001")) == 1
    assert usd_to_nanos(25) == 25_000_000_000
    assert nanos_to_usd(39_000_000) == Decimal("0.039")
    assert format_usd(39_000_000) == "0.039"
    assert format_usd(0) == "0"
    assert format_usd(10 * 10**9) == "10"
    assert format_usd(20 * 39_000_000) == "0.78"
    with pytest.raises(TypeError):
        usd_to_nanos(0.1)  # type: ignore[arg-type]
    for bad in ("-1", "NaN", "abc", "0.0000000001"):
        with pytest.raises(ValueError):
            usd_to_nanos(bad)


def test_defaults_are_the_reference_per_image_prices() -> None:
    table = PriceTable()
    assert table.cost(FLASH_25, IMAGE_1290, 1, None).nanos == 39_000_000
    usage = Usage(prompt_tokens=10, candidates_tokens=1200, candidates_image_tokens=1120, thoughts_tokens=150)
    assert table.cost(PRO_3, usage, 1, "1K").nanos == 134_000_000
    assert table.cost(PRO_3, usage, 1, "4K").nanos == 240_000_000
    assert table.cost(FLASH_31, usage, 1, "512").nanos == 45_000_000
    assert table.cost(FLASH_31, usage, 1, "2K").nanos == 101_000_000
    # Twenty images cost exactly twenty times one: no float drift.
    assert sum(table.cost(FLASH_25, IMAGE_1290, 1, "1K").nanos for _ in range(20)) == usd_to_nanos("0.78")


def test_answers_without_an_image_are_free_unless_configured() -> None:
    blocked = Usage(prompt_tokens=1119, thoughts_tokens=240)
    assert PriceTable().cost(PRO_3, blocked, 0, None).nanos == 0
    charging = PriceTable(charge_without_image=True).with_overrides({PRO_3.id: {"input_per_mtok": "2"}})
    charge = charging.cost(PRO_3, blocked, 0, None)
    assert charge.billable and charge.nanos == 1119 * 2000  # $2 per 1M = 2000 nanos a token


def test_token_prices_and_modality_breakdown() -> None:
    table = PriceTable().with_overrides(
        {
            FLASH_25.id: {
                "per_image": {},
                "input_per_mtok": "0.30",
                "text_per_mtok": "2.5",
                "image_per_mtok": "30",
            }
        }
    )
    usage = Usage(prompt_tokens=100, candidates_tokens=1300, candidates_image_tokens=1290)
    # 100 x 300 + 10 x 2500 + 1290 x 30000 nanos
    assert table.cost(FLASH_25, usage, 1, None).nanos == 30_000 + 25_000 + 38_700_000
    # Without a breakdown, an image answer's candidate tokens are all image tokens.
    plain = Usage(prompt_tokens=100, candidates_tokens=1300)
    assert table.cost(FLASH_25, plain, 1, None).nanos == 30_000 + 1300 * 30_000


def test_max_cost_bounds_the_cost() -> None:
    table = PriceTable()
    assert (
        table.max_cost(FLASH_25, images=1, image_size=None, input_tokens=50, output_tokens=32768)
        == 39_000_000
    )
    assert table.max_cost(FLASH_25, images=0, image_size=None, input_tokens=50, output_tokens=10) == 0
    priced = table.with_overrides({PRO_3.id: {"text_per_mtok": "12"}})
    bound = priced.max_cost(PRO_3, images=1, image_size="1K", input_tokens=10, output_tokens=1000)
    assert bound == 134_000_000 + 1000 * 12_000


def test_overrides_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown price fields"):
        PriceTable().with_overrides({FLASH_25.id: {"per_token": "1"}})
    with pytest.raises(ValueError):
        PriceTable().with_overrides({FLASH_25.id: {"input_per_mtok": "-1"}})
    table = PriceTable().with_overrides({FLASH_25.id: {"per_image": {"1K": "0.05"}}})
    assert table.cost(FLASH_25, IMAGE_1290, 1, "1K").nanos == 50_000_000
    assert table.to_json()["models"][FLASH_25.id]["per_image"] == {"1K": "0.05"}
