"""Keys as JSON, and limit values parsed from text (shared by the admin API and the CLI)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from bananagate.protocol.pricing import format_usd, usd_to_nanos
from bananagate.store import ApiKeyRecord, UsageSummary
from bananagate.store.keys import validate_cidrs

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_usd(value: object) -> int:
    """A USD amount (string preferred; a JSON number is read by its shortest text) -> nanos."""
    if isinstance(value, bool) or value is None:
        raise ValueError("an amount in USD is required")
    if isinstance(value, float):
        value = repr(value)  # the shortest text that reads back as this float, e.g. "0.78"
    if not isinstance(value, (str, int, Decimal)):
        raise ValueError(f"not an amount in USD: {value!r}")
    return usd_to_nanos(str(value).lstrip("$"))


def parse_expires(value: str, now: datetime | None = None) -> datetime:
    """`2026-12-31`, `2026-12-31T18:00:00Z` or a duration from now (`30d`, `12h`, `90m`)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value)
    if match:
        return now + timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a date, time or duration: {value!r}") from None
        parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """Like `parse_expires`, but a duration reaches back: `7d` is seven days ago."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    return parse_expires(value, now)


def _optional_int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or null")
    return value


def _list(name: str, value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings or null")
    return [v.strip() for v in value if v.strip()]


def parse_changes(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON fields of the admin API -> `KeyRepository.update_key` changes (null clears a limit)."""
    allowed = {
        "label",
        "models",
        "budget_usd",
        "rpm",
        "images_per_day",
        "max_concurrent",
        "expires_at",
        "allow_cidrs",
    }
    unknown = set(data) - allowed - {"name"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    for name, value in data.items():
        if name == "name":
            continue
        if name == "budget_usd":
            changes["budget_nanos"] = None if value is None else parse_usd(value)
        elif name == "expires_at":
            changes["expires_at"] = None if value is None else parse_expires(str(value))
        elif name in ("models", "allow_cidrs"):
            items = _list(name, value)
            if name == "allow_cidrs" and items:
                validate_cidrs(items)
            changes[name] = items
        elif name == "label":
            if value is not None and not isinstance(value, str):
                raise ValueError("label must be a string or null")
            changes["label"] = value
        else:
            changes[name] = _optional_int(name, value)
    return changes


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd(nanos)


def key_json(record: ApiKeyRecord) -> dict[str, Any]:
    """A key for listings: everything but its secret (which is not stored anyway)."""
    limits = record.limits
    return {
        "id": record.id,
        "name": record.name,
        "label": record.label,
        "prefix": record.prefix,
        "status": record.status,
        "created_at": _iso(record.created_at),
        "last_used_at": _iso(record.last_used_at),
        "revoked_at": _iso(record.revoked_at),
        "expires_at": _iso(limits.expires_at),
        "models": list(limits.models),
        "allow_cidrs": list(limits.allow_cidrs),
        "budget_usd": _usd(limits.budget_nanos),
        "spent_usd": format_usd(record.spent_nanos),
        "reserved_usd": format_usd(record.reserved_nanos),
        "remaining_usd": _usd(record.remaining_nanos),
        "rpm": limits.rpm,
        "images_per_day": limits.images_per_day,
        "max_concurrent": limits.max_concurrent,
    }


def summary_json(summary: UsageSummary) -> dict[str, Any]:
    out = summary.to_dict()
    out["cost_usd"] = format_usd(out.pop("cost_nanos"))
    return out
