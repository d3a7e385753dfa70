"""A key reads its own balance and usage: `GET /v1beta/usage` (and `/v1/usage`), plus the
OpenAI-style billing routes aggregators (new-api/one-api, CometAPI's balance query) serve:
`/v1/dashboard/billing/subscription` and `/v1/dashboard/billing/usage` (also without `/v1`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bananagate.protocol.errors import ApiError
from bananagate.protocol.pricing import format_usd, nanos_to_usd
from bananagate.server.auth import Authenticator
from bananagate.server.keyspec import key_json, summary_json
from bananagate.server.responses import json_response
from bananagate.store import ApiKeyRecord, Store


def _day(value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"Invalid date {value!r}: use YYYY-MM-DD.", "INVALID_ARGUMENT") from None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class UsageRoutes:
    def __init__(self, auth: Authenticator, store: Callable[[], Store]) -> None:
        self._auth = auth
        self._store = store

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/v1beta/usage", self.usage, methods=["GET"]),
            Route("/v1/usage", self.usage, methods=["GET"]),
        ]
        for prefix in ("/v1", ""):
            routes.append(
                Route(f"{prefix}/dashboard/billing/subscription", self.subscription, methods=["GET"])
            )
            routes.append(Route(f"{prefix}/dashboard/billing/usage", self.billing_usage, methods=["GET"]))
        return routes

    async def _record(self, request: Request) -> ApiKeyRecord:
        principal = await self._auth.authenticate(request)
        record = await anyio.to_thread.run_sync(self._store().keys.get_key_by_id, principal.key_id)
        if record is None:  # deleted between the two reads
            raise ApiError(401, "API key not valid. Please pass a valid API key.", "UNAUTHENTICATED")
        return record

    async def usage(self, request: Request) -> Response:
        """The key, its limits and balance, and its usage today, over 30 days and in total."""
        record = await self._record(request)
        ledger = self._store().ledger
        today = _midnight(datetime.now(UTC).date())

        def totals() -> dict[str, Any]:
            return {
                "today": summary_json(ledger.summary(key_id=record.id, since=today)[0]),
                "last_30_days": summary_json(
                    ledger.summary(key_id=record.id, since=today - timedelta(days=29))[0]
                ),
                "all_time": summary_json(ledger.summary(key_id=record.id)[0]),
            }

        usage = await anyio.to_thread.run_sync(totals)
        return json_response({"key": key_json(record), "usage": usage})

    async def subscription(self, request: Request) -> Response:
        record = await self._record(request)
        budget = record.limits.budget_nanos
        # OpenAI's shape has float dollars; exact strings ride along in *_usd_exact.
        hard = float(nanos_to_usd(budget)) if budget is not None else 100_000_000.0
        expires = record.limits.expires_at
        return json_response(
            {
                "object": "billing_subscription",
                "has_payment_method": True,
                "soft_limit_usd": hard,
                "hard_limit_usd": hard,
                "system_hard_limit_usd": hard,
                "access_until": int(expires.timestamp()) if expires else 0,
                "hard_limit_usd_exact": format_usd(budget) if budget is not None else None,
                "spent_usd_exact": format_usd(record.spent_nanos),
            }
        )

    async def billing_usage(self, request: Request) -> Response:
        """`total_usage` is in cents, as OpenAI's route returns it."""
        record = await self._record(request)
        q = request.query_params
        end = _day(q.get("end_date"), datetime.now(UTC).date() + timedelta(days=1))
        start = _day(q.get("start_date"), end - timedelta(days=100))
        ledger = self._store().ledger
        rows = await anyio.to_thread.run_sync(
            lambda: ledger.summary(key_id=record.id, since=_midnight(start), until=_midnight(end))
        )
        nanos = rows[0].cost_nanos
        return json_response(
            {
                "object": "list",
                "total_usage": float(nanos_to_usd(nanos) * 100),
                "total_usage_usd_exact": format_usd(nanos),
            }
        )
