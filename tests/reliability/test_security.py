"""Security: no key material anywhere it could leak, auth failures limited per client address,
admin and console closed to API keys, CORS off unless configured, image links that cannot walk
out of their directory, and the SSRF guard's corners.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bananagate.imagestore import ImageStore, LinkRefused
from bananagate.server.fetch import FetchError, FetchPolicy, ImageFetcher, address_allowed
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.reliability.conftest import (
    ADMIN_KEY,
    BODY,
    FAST_ENV,
    GENERATE,
    UPSTREAM_KEY,
    Behaviour,
    GatewayFactory,
    RawUpstream,
    assert_google_envelope,
    new_key,
)

DB_CHANNEL_KEY = "AIzaSy-reliability-db-channel-key-9876543210zyx"


# --- key material ------------------------------------------------------------------------------------


def _cli(gateway: Gateway, *args: str) -> str:
    """`bananagate ARGS` run in this process (click's runner: no interpreter start-up per call)."""
    from click.testing import CliRunner

    from bananagate.cli import cli

    env = {"BANANAGATE_DATA_DIR": str(gateway.data_dir), "BANANAGATE_ADMIN_KEY": ADMIN_KEY}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def leaky_upstream() -> Iterator[RawUpstream]:
    """An upstream that puts the key it was sent into its error messages (some really do)."""
    with RawUpstream() as upstream:
        upstream.default = Behaviour("status", 400, echo_key=True)
        yield upstream


def _near_miss(secret: str) -> str:
    """The secret with its last character changed (a random key may already end in any letter)."""
    return secret[:-1] + ("X" if secret[-1] != "X" else "Y")


def test_no_key_material_in_logs_errors_listings_or_the_database(
    gateway_factory: GatewayFactory, leaky_upstream: RawUpstream
) -> None:
    config = (
        "[routing]\nbackoff_base = 0.01\n\n[[channels]]\n"
        f'name = "leaky"\nkind = "gemini"\nbase_url = "{leaky_upstream.url}"\n'
        'keys = ["${REL_UPSTREAM_KEY}"]\nmodels = ["gemini-3-pro-image-preview"]\n\n'
        '[[channels]]\nname = "emu"\nkind = "emulator"\nmodels = ["gemini-2.5-flash-image"]\n'
    )
    gateway = gateway_factory(
        config=config, env={"REL_UPSTREAM_KEY": UPSTREAM_KEY, "BANANAGATE_LOG_LEVEL": "debug"}
    )
    _cli(
        gateway,
        "channels",
        "add",
        "dbleaky",
        "--kind",
        "gemini-compatible",
        "--base-url",
        leaky_upstream.url,
        "--key",
        DB_CHANNEL_KEY,
        "--models",
        "gemini-3.1-flash-image-preview",
    )
    _, user_key = new_key(gateway, "user")
    deadline = time.monotonic() + 10  # the running gateway picks database channels up within ~2 s
    while (
        "gemini-3.1-flash"
        not in httpx.get(gateway.url + "/v1beta/models", headers={"x-goog-api-key": user_key}).text
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    secrets = {
        "default key": gateway.key,
        "user key": user_key,
        "admin key": ADMIN_KEY,
        "file channel key": UPSTREAM_KEY,
        "db channel key": DB_CHANNEL_KEY,
    }
    seen: list[str] = []
    client = httpx.Client(base_url=gateway.url, timeout=30)

    def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        seen.append(f"{response.status_code} {response.headers} {response.text}")  # not the request
        return response

    key = {"x-goog-api-key": user_key}
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert call("POST", GENERATE, content=BODY, headers=key).status_code == 200
    assert call("POST", GENERATE, content=BODY, headers={"authorization": user_key}).status_code == 200
    assert call("POST", GENERATE + f"?key={user_key}", content=BODY).status_code == 200
    # Upstream errors that quote the upstream key: the client must not see it.
    for model in ("gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"):
        response = call("POST", f"/v1beta/models/{model}:generateContent", content=BODY, headers=key)
        assert response.status_code == 400
    for model in ("gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"):
        call("POST", f"/v1beta/models/{model}:streamGenerateContent?alt=sse", content=BODY, headers=key)
    call(
        "POST",
        "/v1/chat/completions",
        json={"model": "gemini-3-pro-image-preview", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {user_key}"},
    )
    # Near-miss keys (a typo of a real one) are not echoed or logged either.
    for wrong in (_near_miss(user_key), _near_miss(ADMIN_KEY)):
        assert call("POST", GENERATE, content=BODY, headers={"x-goog-api-key": wrong}).status_code == 401
        assert call("GET", "/admin/keys", headers={"authorization": f"Bearer {wrong}"}).status_code == 403
    for path in ("/admin/keys", "/admin/usage", "/admin/usage/requests", "/admin/prices", "/admin/keys/user"):
        assert call("GET", path, headers=admin).status_code == 200
    for path in ("/v1beta/usage", "/v1/dashboard/billing/subscription", "/v1beta/models"):
        assert call("GET", path, headers=key).status_code == 200
    call("GET", "/metrics")
    call("GET", "/openapi.json")
    client.close()

    listings = [
        _cli(gateway, "keys", "list"),
        _cli(gateway, "keys", "show", "user"),
        _cli(gateway, "channels", "list"),
        _cli(gateway, "usage", "--by", "key"),
    ]
    database = gateway.data_dir / "bananagate.db"
    with sqlite3.connect(database) as db:
        dump = "\n".join(db.iterdump())
    raw_files = b"".join(
        path.read_bytes()
        for path in gateway.data_dir.rglob("*")
        # The key files are where the keys are meant to be (mode 0600, shown once).
        # The log (the test harness keeps it here) is checked above.
        if path.is_file()
        and path.name not in ("default.key", "admin.key", "secret.key")
        and path != gateway.log_path
    )
    places = {
        "responses": "\n".join(seen),
        # Except the banner of the very first start, which shows the new default key once by
        # design (README "Set-up"): the one place it is ever displayed.
        "server log": "\n".join(x for x in gateway.log().splitlines() if "created API key default:" not in x),
        "cli listings": "\n".join(listings),
        "database dump": dump,
    }
    for name, secret in secrets.items():
        # The whole secret, or its tail (listings may show a prefix by design, never more).
        for needle in (secret, secret[-16:]):
            for place, text in places.items():
                assert needle not in text, f"{name} found in {place}"
            assert needle.encode() not in raw_files, f"{name} found in the data dir's files"
    assert leaky_upstream.requests  # the leaky upstream was really called (with the keys)


# --- auth failures per address -----------------------------------------------------------------------


def test_failed_auths_are_limited_per_address(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(env={"BANANAGATE_AUTH_FAILURES_PER_MINUTE": "5"})
    client = httpx.Client(base_url=gateway.url, timeout=30)

    def post(address: str, key: str | None, path: str = GENERATE) -> httpx.Response:
        # uvicorn trusts X-Forwarded-For from loopback (a local proxy): one address per "client".
        headers = {"x-forwarded-for": address}
        if key is not None:
            headers["x-goog-api-key"] = key
        return client.post(path, content=BODY, headers=headers)

    # Forgotten keys are not guesses: never counted.
    assert {post("203.0.113.7", None).status_code for _ in range(8)} == {401}
    assert [post("203.0.113.7", "sk-guess").status_code for _ in range(5)] == [401] * 5
    refused = post("203.0.113.7", "sk-guess")
    error = assert_google_envelope(refused, 429)
    assert int(refused.headers["retry-after"]) > 0 and "RetryInfo" in refused.text
    assert "AUTH_FAILURES_EXCEEDED" in refused.text
    # Refused before the key is looked at: a right key from that address is refused too.
    assert post("203.0.113.7", gateway.key).status_code == 429
    openai = client.post(
        "/v1/images/generations",
        json={"prompt": "x"},
        headers={"x-forwarded-for": "203.0.113.7", "authorization": f"Bearer {gateway.key}"},
    )
    assert openai.status_code == 429 and openai.json()["error"]["type"]  # OpenAI's envelope there
    assert error["status"] == "RESOURCE_EXHAUSTED"
    # Other addresses are not affected, and successes never count.
    assert post("203.0.113.8", gateway.key).status_code == 200
    assert {post("203.0.113.9", gateway.key, "/v1beta/models:x").status_code for _ in range(3)} == {404}
    assert [
        client.get(
            "/v1beta/models", headers={"x-forwarded-for": "203.0.113.10", "x-goog-api-key": gateway.key}
        ).status_code
        for _ in range(12)
    ] == [200] * 12
    # The admin key counts too, on its own routes.
    for _ in range(5):
        response = client.get(
            "/admin/keys", headers={"x-forwarded-for": "203.0.113.11", "authorization": "Bearer nope"}
        )
        assert response.status_code == 403
    response = client.get(
        "/admin/keys", headers={"x-forwarded-for": "203.0.113.11", "authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert_google_envelope(response, 429)
    assert client.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    client.close()


def test_limiter_forgets_old_failures_and_bounds_its_memory() -> None:
    from bananagate.server.auth import AuthFailureLimiter

    now = [1000.0]
    limiter = AuthFailureLimiter(3, max_addresses=100, clock=lambda: now[0])
    for _ in range(3):
        limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(60.0)
    now[0] += 30
    assert limiter.retry_after("a") == pytest.approx(30.0)
    now[0] += 30.5
    assert limiter.retry_after("a") is None  # a minute after the failures: free again
    for i in range(10_000):  # a flood of spoofed addresses
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) == 100
    assert AuthFailureLimiter(0).retry_after("a") is None


# --- admin and console are not for API keys -----------------------------------------------------------


ADMIN_ROUTES = [
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys/default"),
    ("PATCH", "/admin/keys/default"),
    ("POST", "/admin/keys/default/revoke"),
    ("POST", "/admin/keys/default/rotate"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/usage/requests"),
    ("GET", "/admin/prices"),
    ("POST", "/admin/sweep"),
]


def test_admin_routes_are_closed_to_api_keys(shared_gateway: Gateway) -> None:
    key = shared_gateway.key
    # An address of this test's own: these wrong admin keys count as failed authentications.
    forwarded = {"x-forwarded-for": "198.51.100.20"}
    with httpx.Client(base_url=shared_gateway.url, timeout=30, headers=forwarded) as client:
        for method, path in ADMIN_ROUTES:
            assert client.request(method, path, json={"name": "x"}).status_code == 401
            for headers in (
                {"authorization": f"Bearer {key}"},
                {"authorization": key},
                {"x-admin-key": key},
                {"x-goog-api-key": key},
            ):
                response = client.request(method, path, json={"name": "x"}, headers=headers)
                assert response.status_code in (401, 403), (method, path, headers, response.text)
                assert_google_envelope(response)
        # The key it could have rotated is still the same.
        assert client.get("/v1beta/models", headers={"x-goog-api-key": key}).status_code == 200


def test_console_is_closed_to_api_keys(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path / "console", env={**FAST_ENV, "BANANAGATE_CONSOLE": "true"})
    try:
        key = gateway.key
        with httpx.Client(base_url=gateway.url, timeout=30, follow_redirects=False) as client:
            for path in (
                "/console/",
                "/console/keys",
                "/console/usage",
                "/console/gallery",
                "/console/channels",
            ):
                for headers in (
                    {},
                    {"authorization": f"Bearer {key}"},
                    {"x-goog-api-key": key},
                    {"cookie": f"session={key}"},
                ):
                    response = client.get(path, headers=headers)
                    assert response.status_code == 303, (path, headers, response.status_code)
                    assert response.headers["location"].startswith("/console/login")
            for path in ("/console/keys", "/console/keys/default/revoke"):
                response = client.post(path, data={"name": "x"}, headers={"authorization": f"Bearer {key}"})
                assert response.status_code in (303, 400, 403), response.status_code
            # An API key is not the admin key at the sign-in form either.
            login = client.get("/console/login")
            assert login.status_code == 200
            _assert_console_headers(login)
            signed = client.post("/console/login", data={"admin_key": key}, headers={"origin": gateway.url})
            assert signed.status_code in (400, 403)
            _assert_console_headers(signed)
        assert httpx.get(gateway.url + "/v1beta/models", headers={"x-goog-api-key": key}).status_code == 200
    finally:
        stop_gateway(gateway)


def _assert_console_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"]
    assert headers["cache-control"] == "no-store"


# --- CORS ----------------------------------------------------------------------------------------------


def test_cors_is_off_by_default(shared_gateway: Gateway) -> None:
    origin = {"origin": "https://evil.example"}
    preflight = {
        **origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-goog-api-key",
    }
    with httpx.Client(base_url=shared_gateway.url, timeout=30) as client:
        for path in (GENERATE, "/v1/images/generations", "/admin/keys", "/v1beta/models"):
            response = client.options(path, headers=preflight)
            assert not any(h.startswith("access-control-") for h in response.headers), response.headers
        response = client.get("/v1beta/models", headers={**origin, "x-goog-api-key": shared_gateway.key})
        assert response.status_code == 200
        assert not any(h.startswith("access-control-") for h in response.headers)


def test_cors_when_configured_allows_only_the_listed_origins(gateway_factory: GatewayFactory) -> None:
    allowed = "https://app.example"
    gateway = gateway_factory(env={"BANANAGATE_CORS_ORIGINS": f"{allowed}, https://other.example"})
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-goog-api-key, content-type",
        }
        response = client.options(GENERATE, headers={**preflight, "origin": allowed})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == allowed
        assert "x-goog-api-key" in response.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in response.headers  # keys are not cookies
        refused = client.options(GENERATE, headers={**preflight, "origin": "https://evil.example"})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        answer = client.post(
            GENERATE, content=BODY, headers={"origin": allowed, "x-goog-api-key": gateway.key}
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == allowed
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        other = client.get(
            "/v1beta/models", headers={"origin": "https://evil.example", "x-goog-api-key": gateway.key}
        )
        assert "access-control-allow-origin" not in other.headers


# --- image links ------------------------------------------------------------------------------------


TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "%252e%252e%252fetc%252fpasswd",
    "..\\..\\etc\\passwd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "image-links.key",
    "..%2Fimage-links.key",
    "..%2Fbananagate.db",
    "0123456789abcdef0123456789abcdef.png%00.txt",
    "0123456789abcdef0123456789abcdef.png/..%2F..%2Fbananagate.db",
]


def test_image_links_cannot_leave_the_image_directory(shared_gateway: Gateway) -> None:
    with httpx.Client(base_url=shared_gateway.url, timeout=30) as client:
        for name in TRAVERSALS:
            for query in ("", "?exp=9999999999&sig=x"):
                response = client.get(f"/v1/files/images/{name}{query}")
                assert response.status_code in (403, 404), (name, response.status_code)
                assert response.headers["content-type"].startswith("application/json")
                assert b"root:" not in response.content and b"SQLite" not in response.content


def test_image_store_refuses_names_and_symlinks_outside(tmp_path: Path) -> None:
    store = ImageStore.open(tmp_path, "secret", 3600)
    name = store.put(b"\x89PNG\r\n\x1a\n" + b"x" * 10, "image/png")
    link = store.link(name)
    exp, sig = (part.split("=", 1)[1] for part in link.split("?", 1)[1].split("&"))
    assert store.open_link(name, exp, sig).path.read_bytes().startswith(b"\x89PNG")
    for bad in [
        "../" + name,
        "/" + name,
        name + "/",
        name.upper(),
        name.replace(".png", ".PNG"),
        "..",
        name + "\x00",
    ]:
        with pytest.raises(LinkRefused):
            store.open_link(bad, exp, sig)
    # A symlink planted under a valid name, pointing outside: refused even with a valid signature.
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"secret")
    planted = "f" * 32 + ".png"
    (store.root / planted).symlink_to(outside)
    planted_link = store.link(planted)
    exp2, sig2 = (part.split("=", 1)[1] for part in planted_link.split("?", 1)[1].split("&"))
    with pytest.raises(LinkRefused):
        store.open_link(planted, exp2, sig2)


# --- SSRF corners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",  # IPv4-compatible 127.0.0.1 (deprecated ::/96)
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "::ffff:0:7f00:1",  # IPv4-translated (SIIT)
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 prefix
        "64:ff9b::a9fe:a9fe",  # well-known NAT64 prefix
        "fec0::1",  # site-local
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "0.1.2.3",
        "255.255.255.255",
    ],
)
def test_embedded_and_odd_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), FetchPolicy())


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/a.png",  # 127.0.0.1 as one decimal number (the resolver expands it)
        "http://127.1/a.png",
        "http://0/a.png",  # 0.0.0.0 reaches loopback on Linux
        "http://[::7f00:1]:9/a.png",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://evil.example@127.0.0.1/a.png",
        "http://evil.example\\@127.0.0.1/a.png",
        "http://127.0.0.1#@evil.example/a.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "http:///a.png",
    ],
)
def test_url_tricks_are_refused_before_connecting(url: str) -> None:
    async def attempt() -> None:
        fetcher = ImageFetcher(FetchPolicy(timeout=2))
        try:
            with pytest.raises(FetchError) as refused:
                await fetcher.fetch(url)
            # Refused by policy, not by a failed connection attempt.
            assert "Error" not in refused.value.reason, refused.value.reason
        finally:
            await fetcher.aclose()

    asyncio.run(attempt())


def test_a_name_with_any_private_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "::ffff:10.0.0.1"]

    async def attempt() -> None:
        fetcher = ImageFetcher(FetchPolicy(timeout=2), resolver=resolver)
        try:
            with pytest.raises(FetchError, match="non-public"):
                await fetcher.fetch("http://images.example/a.png")
        finally:
            await fetcher.aclose()

    asyncio.run(attempt())
