"""The usage page: requests, images and cost per day and per model (inline SVG charts), and a
table of the latest requests, from the ledger, optionally filtered by key and model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bananagate.console.charts import BarChart, bar_chart
from bananagate.console.context import ConsoleContext
from bananagate.console.session import Session
from bananagate.protocol.catalog import MODELS
from bananagate.protocol.pricing import format_usd
from bananagate.store import LedgerRow, Store, UsageSummary
from bananagate.store.schema import LedgerEntry

PERIODS = (7, 14, 30, 90)
RECENT = 50


def usd(value: float) -> str:
    return f"${value:,.3f}".rstrip("0").rstrip(".") if value else "$0"


def recent_rows(
    store: Store, key_name: str | None, model: str | None, limit: int = RECENT
) -> list[LedgerRow]:
    """The newest ledger rows first (the ledger's own listing pages oldest first)."""
    query = select(LedgerEntry).order_by(LedgerEntry.id.desc()).limit(limit)
    if key_name:
        query = query.where(LedgerEntry.key_name == key_name)
    if model:
        query = query.where(LedgerEntry.model == model)
    with DbSession(store.engine) as session:
        return [LedgerRow.from_entry(entry) for entry in session.scalars(query)]


@dataclass(frozen=True)
class ModelRow:
    model: str
    requests: int
    images: int
    cost: str
    share: float  # of the busiest model's requests, 0..1


def daily_points(rows: list[UsageSummary], first: date, days: int) -> list[tuple[date, UsageSummary | None]]:
    """One point per UTC day from `first`, days without requests included."""
    by_day = {row.group: row for row in rows}
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        out.append((day, by_day.get(day.isoformat())))
    return out


def charts(points: list[tuple[date, UsageSummary | None]]) -> list[BarChart]:
    def label(day: date) -> str:
        return day.strftime("%b %d")

    requests = [(label(d), float(s.requests if s else 0)) for d, s in points]
    images = [(label(d), float(s.images if s else 0)) for d, s in points]
    cost = [(label(d), (s.cost_nanos if s else 0) / 1e9) for d, s in points]
    nanos = sum(s.cost_nanos for _, s in points if s)
    return [
        bar_chart("Requests per day", requests, fmt=lambda v: f"{v:,.0f}"),
        bar_chart("Images per day", images, fmt=lambda v: f"{v:,.0f}"),
        bar_chart("Cost per day (USD)", cost, fmt=usd, total=f"${format_usd(nanos)}"),
    ]


class UsageViews:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[BaseRoute]:
        return [Route("/usage", self.ctx.page(self.index), methods=["GET", "HEAD"])]

    async def index(self, request: Request, session: Session) -> Response:
        q = request.query_params
        days = int(q["days"]) if q.get("days", "").isdigit() and int(q["days"]) in PERIODS else 14
        key, model = q.get("key") or None, q.get("model") or None
        store = self.ctx.store()
        first = datetime.now(UTC).date() - timedelta(days=days - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC)
        filters: dict[str, Any] = {"key_name": key, "model": model, "since": since}
        ledger = store.ledger
        per_day = await self.ctx.run(lambda: ledger.summary(by="day", **filters))
        per_model = await self.ctx.run(lambda: ledger.summary(by="model", **filters))
        total = (await self.ctx.run(lambda: ledger.summary(**filters)))[0]
        recent = await self.ctx.run(recent_rows, store, key, model)
        key_names = [r.name for r in await self.ctx.run(store.keys.list_keys, True)]
        busiest = max((row.requests for row in per_model), default=0) or 1
        models = [
            ModelRow(str(r.group), r.requests, r.images, format_usd(r.cost_nanos), r.requests / busiest)
            for r in per_model
        ]
        return self.ctx.render(
            request,
            "usage.html",
            session,
            section="usage",
            title="Usage",
            charts=charts(daily_points(per_day, first, days)),
            models=models,
            total=total,
            total_cost=format_usd(total.cost_nanos),
            recent=recent,
            days=days,
            periods=PERIODS,
            key=key,
            model=model,
            key_names=key_names,
            model_names=[m.id for m in MODELS],
        )
