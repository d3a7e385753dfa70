"""`bananagate keys` limit flags, show/update/rotate, and `bananagate usage`, on both databases."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bananagate.cli import cli
from bananagate.store import LedgerRow, Store

Invoke = Callable[..., Result]


@pytest.fixture
def run(db_url: str, tmp_path: Path) -> Invoke:
    env = {"BANANAGATE_DATA_DIR": str(tmp_path / "data")}
    env["BANANAGATE_DATABASE_URL"] = db_url if db_url.startswith("postgresql") else None  # type: ignore[assignment]
    runner = CliRunner(env=env)

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_create_with_limits_show_update_rotate(run: Invoke, db_url: str) -> None:
    created = run(
        "keys", "create", "--name", "ci", "-q",
        "--models", "gemini-2.5-flash-image,gemini-3-pro-image-preview",
        "--budget-usd", "12.5", "--rpm", "30", "--images-per-day", "500", "--max-concurrent", "4",
        "--expires", "2030-01-01", "--allow-cidr", "10.0.0.0/8", "--allow-cidr", "192.168.1.7",
        "--label", "CI runner",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    shown = json.loads(run("keys", "show", "ci").stdout)
    assert shown["budget_usd"] == "12.5" and shown["rpm"] == 30 and shown["images_per_day"] == 500
    assert shown["max_concurrent"] == 4 and shown["expires_at"].startswith("2030-01-01")
    assert shown["allow_cidrs"] == ["10.0.0.0/8", "192.168.1.7/32"] and shown["label"] == "CI runner"
    assert shown["models"] == ["gemini-2.5-flash-image", "gemini-3-pro-image-preview"]
    assert secret not in json.dumps(shown)

    updated = run("keys", "update", "ci", "--rpm", "none", "--budget-usd", "20", "--allow-cidr", "any")
    assert updated.exit_code == 0, updated.output
    data = json.loads(updated.stdout)
    assert data["rpm"] is None and data["budget_usd"] == "20" and data["allow_cidrs"] == []
    assert run("keys", "update", "ci").exit_code == 2
    assert run("keys", "update", "ci", "--rpm", "lots").exit_code == 2
    assert run("keys", "update", "ci", "--allow-cidr", "300.1.1.1/8").exit_code == 2
    assert run("keys", "update", "nope", "--rpm", "1").exit_code == 1

    rotated = run("keys", "rotate", "ci", "-q")
    assert rotated.exit_code == 0 and rotated.stdout.strip() != secret
    with Store.open(db_url) as store:
        assert store.keys.authenticate(secret) is None
        assert store.keys.authenticate(rotated.stdout.strip()) is not None
    full = json.loads(run("keys", "list", "--json", "--full").stdout)
    assert full[0]["budget_usd"] == "20" and rotated.stdout.strip() not in json.dumps(full)
    assert "ci" in run("keys", "list").stdout


def test_usage_report(run: Invoke, db_url: str) -> None:
    from datetime import UTC, datetime

    day = datetime(2026, 5, 1, 12, tzinfo=UTC)
    with Store.open(db_url) as store:
        for i, (key, model, cost) in enumerate(
            [("a", "gemini-2.5-flash-image", 39_000_000), ("a", "gemini-3-pro-image-preview", 134_000_000),
             ("b", "gemini-2.5-flash-image", 39_000_000)]
        ):  # fmt: skip
            store.ledger.record(LedgerRow(f"r{i}", i, key, model, 200, "ok", day, images=1, cost_nanos=cost))
    result = run("usage", "--by", "key", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["key"], r["cost_usd"], r["images"]) for r in rows] == [
        ("a", "0.173", "2"),
        ("b", "0.039", "1"),
        ("total", "0.212", "3"),
    ]
    by_model = list(csv.DictReader(io.StringIO(run("usage", "--by", "model", "--key", "a", "--csv").stdout)))
    assert [r["model"] for r in by_model] == ["gemini-2.5-flash-image", "gemini-3-pro-image-preview", "total"]
    table = run("usage", "--by", "day", "--since", "2026-05-01")
    assert "2026-05-01" in table.stdout and "0.212" in table.stdout
    assert "0" in run("usage", "--since", "1h").stdout
    assert run("usage", "--since", "yesterday-ish").exit_code == 2
