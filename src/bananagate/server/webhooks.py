"""Webhook calls: signed like Stripe's, sent only to public addresses, retried by the caller.

Each call is a POST of a small JSON event (`type`, `name`, `state`, ...; never the images: the
receiver fetches the result with its key) with the headers

    X-Bananagate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
    X-Bananagate-Event: job.succeeded | job.failed | job.cancelled | batch.succeeded | ...
    X-Bananagate-Delivery: <delivery id> (the same on every retry of one event)

A receiver recomputes the HMAC over the raw body, compares in constant time and refuses old
timestamps (`verify` does all three), which stops forgeries and replays. The secret is the
job's own `webhook_secret` when the submit gave one (so tenants need not share one), else the
gateway's: `BANANAGATE_WEBHOOK_SECRET`, else one generated into `<data dir>/webhook.secret`.

A webhook URL is a request the gateway makes on a client's behalf, so it gets the SSRF guard of
image fetches (`server/fetch.py`): every address the host resolves to must be public unless the
operator allows private ones, and the connection goes to the checked address (no DNS
rebinding). Redirects are not followed: a 3xx counts as a failed attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from bananagate import __version__
from bananagate.protocol.errors import ApiError, invalid_argument
from bananagate.secretfile import read_or_create
from bananagate.server.fetch import FetchPolicy, IPAddress, address_allowed

if TYPE_CHECKING:
    import httpx

SIGNATURE_HEADER = "X-Bananagate-Signature"
EVENT_HEADER = "X-Bananagate-Event"
DELIVERY_HEADER = "X-Bananagate-Delivery"
SECRET_FILENAME = "webhook.secret"
# A receiver should refuse signatures older than this (seconds): replays of captured calls.
DEFAULT_TOLERANCE = 300.0
MAX_URL_LENGTH = 2048


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for `body` sent at `timestamp` (default now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> bool:
    """True when `header` signs `body` with `secret` within `tolerance` seconds of `now`."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


def gateway_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, else the one in `<data dir>/webhook.secret` (made once, 0600)."""
    if configured:
        return configured
    return read_or_create(data_dir / SECRET_FILENAME, "whsec_" + secrets.token_urlsafe(32))


def check_url(url: object, field: str = "webhook_url") -> str:
    """A syntactically usable webhook URL, else a 400. Addresses are checked at each call."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise invalid_argument(f"{field} must be an http(s) URL of at most {MAX_URL_LENGTH} characters.")
    import httpx  # on first use: the gateway does without it (and its ~3 MB) until then

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise invalid_argument(f"{field} is not a valid URL.") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise invalid_argument(f"{field} must be an http:// or https:// URL with a host.")
    if parsed.userinfo:
        raise invalid_argument(f"{field} must not carry credentials.")
    return url


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    status: int | None = None
    error: str | None = None


async def _resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


class WebhookSender:
    """POSTs signed events under the fetch policy; one connection pool per process."""

    def __init__(self, policy: FetchPolicy, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout

    @cached_property
    def _client(self) -> httpx.AsyncClient:
        import httpx  # with the first webhook: most gateways send none

        return httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # a proxy would make the address check meaningless
            timeout=httpx.Timeout(self.timeout),
            # No pooling: connections are keyed by the pinned IP, not the host they were made for.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        if "_client" in self.__dict__:
            await self._client.aclose()

    async def post(self, url: str, body: bytes, *, secret: str, event: str, delivery: str) -> Delivery:
        import httpx

        try:
            target = httpx.URL(check_url(url))
            ip = await self._address(target)
        except ApiError as exc:
            return Delivery(False, error=exc.message)
        headers = {
            "host": target.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": f"bananagate-webhooks/{__version__}",
            SIGNATURE_HEADER: sign(secret, body),
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery,
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            response = await self._client.post(
                target.copy_with(host=ip), content=body, headers=headers, extensions=extensions
            )
        except httpx.HTTPError as exc:
            return Delivery(False, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Delivery(True, response.status_code)
        return Delivery(False, response.status_code, f"the receiver answered HTTP {response.status_code}")

    async def _address(self, target: httpx.URL) -> str:
        """The address to connect to, once every address of the host has passed the policy."""
        port = target.port or (443 if target.scheme == "https" else 80)
        addresses: list[IPAddress]
        try:
            addresses = [ipaddress.ip_address(target.host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a) for a in await _resolve(target.host, port)]
            except OSError as exc:
                raise invalid_argument(f"cannot resolve {target.host!r} ({exc})") from None
        if not addresses:
            raise invalid_argument(f"cannot resolve {target.host!r}")
        for ip in addresses:
            if not address_allowed(ip, self.policy):
                raise invalid_argument(
                    f"{target.host} resolves to {ip}, a loopback, private, link-local or otherwise "
                    "non-public address; webhooks are not sent there (an operator can allow them "
                    "with BANANAGATE_FETCH_ALLOW_PRIVATE or BANANAGATE_FETCH_ALLOWED_NETWORKS)"
                )
        return str(addresses[0])
