"""The admin API under `/admin/`: keys and usage, as JSON, for the holder of the admin key.

The admin key is `BANANAGATE_ADMIN_KEY`, else the one generated on first start into
`<data dir>/admin.key` (mode 0600). It is sent as `Authorization: Bearer <key>` or
`x-admin-key: <key>`; a missing key is 401, a wrong one (an ordinary API key too) is 403.
Only its SHA-256 is kept in memory, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bananagate.protocol.errors import ApiError
from bananagate.protocol.pricing import PriceTable, format_usd
from bananagate.secretfile import read_or_create
from bananagate.server.keyspec import key_json, parse_changes, parse_since, summary_json
from bananagate.server.openapi import ADMIN_OPENAPI
from bananagate.server.responses import json_response
from bananagate.store import InvalidKeyName, KeyLimits, KeyNameTaken, LedgerRow, Store

ADMIN_KEY_FILENAME = "admin.key"
GROUPS = ("day", "model", "key")


def ensure_admin_key(configured: str | None, data_dir: Path) -> str:
    """The configured admin key, else the one in `<data_dir>/admin.key`, created if missing.

    Created without ever replacing an existing file (hard link of a 0600 temporary file), so
    several workers starting at once all end up with the same key.
    """
    if configured:
        return configured.strip()
    return read_or_create(data_dir / ADMIN_KEY_FILENAME, "ak-" + secrets.token_urlsafe(36))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message, "INVALID_ARGUMENT")


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"no API key named {name!r}", "NOT_FOUND")


def ledger_json(row: LedgerRow) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(row, k) for k in row.__dataclass_fields__}
    out["created_at"] = row.created_at.isoformat()
    out["cost_usd"] = format_usd(out.pop("cost_nanos"))
    return out


def since_param(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise _bad_request(str(exc)) from None


class AdminApi:
    def __init__(self, store: Callable[[], Store], admin_key: Callable[[], str], prices: PriceTable) -> None:
        self._store = store
        self._admin_key = admin_key
        self._prices = prices

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin/openapi.json", self.openapi, methods=["GET"]),
            Route("/admin/keys", self.keys, methods=["GET", "POST"]),
            Route("/admin/keys/{name}", self.key, methods=["GET", "PATCH", "DELETE"]),
            Route("/admin/keys/{name}/revoke", self.revoke, methods=["POST"]),
            Route("/admin/keys/{name}/rotate", self.rotate, methods=["POST"]),
            Route("/admin/usage", self.usage, methods=["GET"]),
            Route("/admin/usage/requests", self.requests, methods=["GET"]),
            Route("/admin/prices", self.prices, methods=["GET"]),
            Route("/admin/sweep", self.sweep, methods=["POST"]),
        ]

    def _check(self, request: Request) -> None:
        presented = request.headers.get("x-admin-key", "").strip()
        if not presented:
            scheme, _, rest = request.headers.get("authorization", "").strip().partition(" ")
            presented = rest.strip() if scheme.lower() == "bearer" else ""
        if not presented:
            raise ApiError(
                401, "The admin API needs the admin key (Authorization: Bearer ...).", "UNAUTHENTICATED"
            )
        if not hmac.compare_digest(_digest(presented), _digest(self._admin_key())):
            raise ApiError(403, "This is not the admin key.", "PERMISSION_DENIED")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        try:
            data = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            raise _bad_request("The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise _bad_request("The body must be a JSON object.")
        return data

    async def openapi(self, request: Request) -> Response:
        return json_response(ADMIN_OPENAPI)

    async def keys(self, request: Request) -> Response:
        self._check(request)
        store = self._store()
        if request.method == "GET":
            include_revoked = request.query_params.get("revoked", "true").lower() != "false"
            records = await self._run(store.keys.list_keys, include_revoked)
            return json_response({"keys": [key_json(r) for r in records]})
        data = await self._json(request)
        name = data.get("name")
        if not isinstance(name, str):
            raise _bad_request("`name` is required.")
        try:
            changes = parse_changes(data)
            limits = KeyLimits(
                models=tuple(changes.get("models") or ()),
                budget_nanos=changes.get("budget_nanos"),
                rpm=changes.get("rpm"),
                images_per_day=changes.get("images_per_day"),
                max_concurrent=changes.get("max_concurrent"),
                expires_at=changes.get("expires_at"),
                allow_cidrs=tuple(changes.get("allow_cidrs") or ()),
            )
            record, secret = await self._run(
                lambda: store.keys.create_key(name, limits=limits, label=changes.get("label"))
            )
        except (ValueError, InvalidKeyName) as exc:
            raise _bad_request(str(exc)) from None
        except KeyNameTaken as exc:
            raise ApiError(409, str(exc), "ALREADY_EXISTS") from None
        return json_response({**key_json(record), "key": secret}, status=201)

    async def key(self, request: Request) -> Response:
        self._check(request)
        store, name = self._store(), request.path_params["name"]
        if request.method == "PATCH":
            try:
                changes = parse_changes(await self._json(request))
                record = await self._run(store.keys.update_key, name, changes)
            except ValueError as exc:
                raise _bad_request(str(exc)) from None
        elif request.method == "DELETE":
            # Deleting would orphan ledger rows' meaning; revocation is the way to end a key.
            raise ApiError(405, "Keys are revoked, not deleted: POST .../revoke.", "METHOD_NOT_ALLOWED")
        else:
            record = await self._run(store.keys.get_key, name)
        if record is None:
            raise _not_found(name)
        return json_response(key_json(record))

    async def revoke(self, request: Request) -> Response:
        self._check(request)
        store, name = self._store(), request.path_params["name"]
        await self._run(store.keys.revoke_key, name)
        record = await self._run(store.keys.get_key, name)
        if record is None:
            raise _not_found(name)
        return json_response(key_json(record))

    async def rotate(self, request: Request) -> Response:
        self._check(request)
        store, name = self._store(), request.path_params["name"]
        result = await self._run(store.keys.rotate_key, name)
        if result is None:
            raise _not_found(name)
        record, secret = result
        return json_response({**key_json(record), "key": secret})

    def _filters(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        return {
            "key_name": q.get("key") or None,
            "model": q.get("model") or None,
            "since": since_param(q.get("since")),
            "until": since_param(q.get("until")),
        }

    async def usage(self, request: Request) -> Response:
        self._check(request)
        by = request.query_params.get("by") or None
        if by is not None and by not in GROUPS:
            raise _bad_request(f"`by` must be one of {', '.join(GROUPS)}.")
        filters = self._filters(request)
        ledger = self._store().ledger
        rows = await self._run(lambda: ledger.summary(by=by, **filters))  # type: ignore[arg-type]
        total = await self._run(lambda: ledger.summary(**filters))
        return json_response(
            {"by": by, "rows": [summary_json(r) for r in rows], "total": summary_json(total[0])}
        )

    async def requests(self, request: Request) -> Response:
        self._check(request)
        try:
            limit = min(int(request.query_params.get("limit", "100")), 10_000)
        except ValueError:
            raise _bad_request("`limit` must be an integer.") from None
        filters = self._filters(request)
        ledger = self._store().ledger
        rows = await self._run(lambda: list(ledger.rows(limit=limit, **filters)))
        return json_response({"requests": [ledger_json(r) for r in rows]})

    async def prices(self, request: Request) -> Response:
        self._check(request)
        return json_response(self._prices.to_json())

    async def sweep(self, request: Request) -> Response:
        self._check(request)
        released = await self._run(self._store().reservations.sweep)
        return json_response({"released": released})
