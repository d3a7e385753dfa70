"""Fetching client-named images over http(s) without becoming an SSRF proxy.

A client that can make the gateway fetch any URL can reach what only the gateway can reach:
cloud metadata (169.254.169.254), admin ports on loopback, the private network. So every fetch:

1. accepts only `http`/`https` URLs without credentials;
2. resolves the host itself and checks **every** address it resolves to (a name with one public
   and one private address is refused: the OS could pick either);
3. connects to the checked address, not the name: the URL's host is replaced by the IP, the name
   goes in `Host` and, for https, in TLS SNI and certificate verification. A DNS answer that
   changes between check and connect (DNS rebinding) therefore cannot redirect the connection;
4. follows redirects itself, a few at most, putting each new URL through the same checks;
5. caps time (one deadline for the whole chain), size (streamed, stopped at the cap) and type
   (the bytes must be PNG, JPEG, WebP or HEIC/HEIF, and the Content-Type must not say otherwise).

Loopback, private, link-local, shared (100.64/10) and other non-global addresses are refused
unless the operator allows them: `BANANAGATE_FETCH_ALLOW_PRIVATE=true`, or listed CIDRs in
`BANANAGATE_FETCH_ALLOWED_NETWORKS`. Multicast and unspecified addresses are always refused.
Environment proxies are ignored (a proxy would make the address check meaningless).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import anyio

from bananagate.protocol import base64codec
from bananagate.protocol.errors import ApiError
from bananagate.protocol.openai_wire import OpenAIError

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 ranges whose last 32 bits are an IPv4 address the packet may end up at: NAT64 (the
# well-known and the local-use prefix), IPv4-compatible (deprecated ::/96; `::1` and `::` fall
# in it too and unwrap to non-public 0.0.0.x) and IPv4-translated (SIIT) addresses.
_EMBEDS_IPV4 = tuple(
    ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)
_REDIRECTS = (301, 302, 303, 307, 308)
# Types a server may name for image bytes; the bytes themselves decide which image type it is.
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


class FetchError(OpenAIError):
    """A refused or failed fetch: always the client's 400, with the reason in the message.

    An OpenAIError so that OpenAI clients get `code: "invalid_image_url"`; Gemini routes render
    it as any other ApiError (400 INVALID_ARGUMENT).
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            400,
            f"Could not fetch image {_shown(url)}: {reason}",
            error_type="invalid_request_error",
            error_code="invalid_image_url",
        )
        self.url = url
        self.reason = reason


def _shown(url: str) -> str:
    return repr(url if len(url) <= 200 else url[:200] + "...")


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    max_bytes: int = 7 * 1024 * 1024  # Google's inline limit per image (protocol reference §6.1)
    timeout: float = 10.0  # seconds for the whole redirect chain
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    max_redirects: int = 3

    @staticmethod
    def parse_networks(text: str) -> tuple[IPNetwork, ...]:
        """`"127.0.0.0/8, 10.1.0.0/16"` -> networks; raises ValueError on a bad entry."""
        return tuple(
            ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()
        )


@dataclass(frozen=True, slots=True)
class FetchedImage:
    url: str
    mime_type: str
    data: bytes


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one really reaches (mapped, NAT64, 6to4), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if any(ip in net for net in _EMBEDS_IPV4):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def address_allowed(ip: IPAddress, policy: FetchPolicy) -> bool:
    real = _unwrap(ip)
    if real.is_multicast or real.is_unspecified:
        return False
    if any(real in net for net in policy.allowed_networks if net.version == real.version):
        return True
    # Site-local (fec0::/10) is deprecated but still routed inside some networks; Python calls it global.
    site_local = isinstance(real, ipaddress.IPv6Address) and real.is_site_local
    return (real.is_global and not site_local) or policy.allow_private


def sniff_image_type(data: bytes) -> str | None:
    """The image MIME type the leading bytes announce, for the types Gemini accepts."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


Resolver = Callable[[str, int], Any]  # async (host, port) -> list of IP strings


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


class ImageFetcher:
    """Fetches images under a `FetchPolicy`; one instance (one connection pool) per app."""

    def __init__(self, policy: FetchPolicy, *, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._resolve: Resolver = resolver or _system_resolve

    @cached_property
    def _client(self) -> httpx.AsyncClient:
        import httpx  # with the first image URL: the gateway does without it (~3 MB) until then

        return httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no environment proxies: the connection must go to the checked IP
            timeout=httpx.Timeout(self.policy.timeout),
            # No pooled connections: the pool is keyed by IP, so a kept-alive TLS connection made
            # for one host name (SNI, certificate) could otherwise carry a request for another.
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"accept": "image/*", "accept-encoding": "identity", "user-agent": "bananagate-fetch"},
        )

    async def aclose(self) -> None:
        if "_client" in self.__dict__:
            await self._client.aclose()

    async def fetch(self, url: str) -> FetchedImage:
        try:
            with anyio.fail_after(self.policy.timeout):
                return await self._follow(url)
        except TimeoutError:
            raise FetchError(url, f"no answer within {self.policy.timeout:g} s") from None

    async def _follow(self, url: str) -> FetchedImage:
        import httpx

        current = url
        for _ in range(self.policy.max_redirects + 1):
            target = await self._check(current)
            host = target.host
            ip = await self._pick_address(current, target)
            pinned = target.copy_with(host=ip)
            headers = {"host": target.netloc.decode("ascii")}
            extensions = {"sni_hostname": host} if target.scheme == "https" else {}
            try:
                async with self._client.stream("GET", pinned, headers=headers, extensions=extensions) as resp:
                    if resp.status_code in _REDIRECTS and "location" in resp.headers:
                        current = str(target.join(resp.headers["location"]))
                        continue
                    return await self._read(url, resp)
            except httpx.HTTPError as exc:
                raise FetchError(
                    url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                ) from None
        raise FetchError(url, f"more than {self.policy.max_redirects} redirects")

    async def _check(self, url: str) -> httpx.URL:
        import httpx

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise FetchError(url, "not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise FetchError(url, "only http and https URLs can be fetched")
        if not parsed.host:
            raise FetchError(url, "the URL has no host")
        if parsed.userinfo:
            raise FetchError(url, "URLs with credentials are not fetched")
        return parsed

    async def _pick_address(self, url: str, target: httpx.URL) -> str:
        """The first resolved address, once every resolved address has passed the policy."""
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                found = await self._resolve(target.host, port)
            except OSError as exc:
                raise FetchError(url, f"cannot resolve {target.host!r} ({exc})") from None
            addresses = [ipaddress.ip_address(a) for a in found]
            if not addresses:
                raise FetchError(url, f"cannot resolve {target.host!r}")
        for ip in addresses:
            if not address_allowed(ip, self.policy):
                what = "is" if literal is not None else f"resolves to {ip}, which is"
                raise FetchError(
                    url,
                    f"{target.host} {what} a loopback, private, link-local or otherwise non-public "
                    "address; the gateway does not fetch from those (an operator can allow them "
                    "with BANANAGATE_FETCH_ALLOW_PRIVATE or BANANAGATE_FETCH_ALLOWED_NETWORKS)",
                )
        return str(addresses[0])

    async def _read(self, url: str, resp: httpx.Response) -> FetchedImage:
        if resp.status_code != 200:
            raise FetchError(url, f"the server answered HTTP {resp.status_code}")
        declared = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if not declared.startswith("image/") and declared not in _GENERIC_TYPES:
            raise FetchError(url, f"Content-Type {declared!r} is not an image")
        limit = self.policy.max_bytes
        length = resp.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise FetchError(url, f"the image is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise FetchError(url, f"the image is larger than {limit} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        mime = sniff_image_type(data)
        if mime is None:
            raise FetchError(url, "the content is not a PNG, JPEG, WebP, HEIC or HEIF image")
        return FetchedImage(url, mime, data)


# --- Gemini fileData -> inlineData -------------------------------------------------------------------


def is_http_url(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


async def inline_file_data(
    body: dict[str, Any],
    fetcher: ImageFetcher,
    *,
    max_images: int,
    max_total_bytes: int,
    should_fetch: Callable[[str], bool] = is_http_url,
) -> dict[str, Any]:
    """`body` (a generateContent request dict) with its fetchable `fileData` parts replaced by
    `inlineData` holding the fetched bytes. Parts are changed in place; fetches run concurrently.

    `should_fetch` chooses which URIs are fetched (e.g. leave Google Files API URIs for a real
    Google upstream). More than `max_images` fetchable parts, or more than `max_total_bytes` in
    all, is a 400 before (respectively after) any fetching.
    """
    targets: list[tuple[dict[str, Any], str]] = []
    for content in body.get("contents") or []:
        for part in (content.get("parts") or []) if isinstance(content, dict) else []:
            ref = part.get("fileData") or part.get("file_data") if isinstance(part, dict) else None
            uri = ref.get("fileUri") or ref.get("file_uri") if isinstance(ref, dict) else None
            if isinstance(uri, str) and should_fetch(uri):
                targets.append((part, uri))
    if len(targets) > max_images:
        raise ApiError(
            400, f"Too many image URLs: {len(targets)} (at most {max_images}).", "INVALID_ARGUMENT"
        )
    if not targets:
        return body
    tasks = [asyncio.ensure_future(fetcher.fetch(uri)) for _, uri in targets]
    try:
        images = await asyncio.gather(*tasks)
    except BaseException:
        # One refusal fails the request: stop the other downloads instead of leaving them running.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    total = sum(len(image.data) for image in images)
    if total > max_total_bytes:
        raise ApiError(
            400,
            f"Fetched images total {total} bytes, over the {max_total_bytes}-byte limit.",
            "INVALID_ARGUMENT",
        )
    for (part, _), image in zip(targets, images, strict=True):
        part.pop("fileData", None)
        part.pop("file_data", None)
        part["inlineData"] = {"mimeType": image.mime_type, "data": base64codec.encode(image.data)}
    return body
