"""Process faults: SIGTERM drains in-flight requests, `kill -9` loses no ledger row of an answer a
client received, a stopped PostgreSQL is a 503 until it is back, a stopped Redis makes limits
per process (with a warning) while budgets stay exact.

PostgreSQL and Redis are this test's own: a cluster made with `initdb` in a temporary directory
and a `redis-server` on a free port, both stopped and started at will. The shared servers on
5432 and 6379 are never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bananagate.settings import Settings
from bananagate.store import KeyLimits, Store, StoreUnavailable
from tests.conftest import Gateway, free_port, start_gateway, stop_gateway
from tests.reliability.conftest import (
    ADMIN_KEY,
    BODY,
    GENERATE,
    PRICE_NANOS,
    STREAM,
    GatewayFactory,
    assert_books_balance,
    assert_google_envelope,
    ledger,
    new_key,
    wait_for_ledger,
)

# --- SIGTERM ---------------------------------------------------------------------------------------


def _assert_clean_exit(gateway: Gateway) -> None:
    # uvicorn re-raises the signal once it has shut down, so a drained process ends "by SIGTERM".
    assert gateway.process.wait(timeout=15) in (0, -signal.SIGTERM)
    log = gateway.log()
    assert "Application shutdown complete" in log and "Traceback" not in log


async def _in_flight(gateway: Gateway, secret: str, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    headers = {"x-goog-api-key": secret}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        calls = [
            asyncio.ensure_future(
                client.post(path, content=BODY, headers={**headers, "x-bananagate-emulate": emulate})
            )
            for path, emulate in requests
        ]
        await asyncio.sleep(0.8)  # all admitted and working
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connection is accepted any more
            await client.get("/healthz", headers={"connection": "close"})
        return list(await asyncio.gather(*calls))


def test_sigterm_drains_in_flight_requests(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory()
    key_id, secret = new_key(gateway, "drained", budget_nanos=10 * PRICE_NANOS)
    requests = [(GENERATE, "delay=2"), (GENERATE, "delay=1.5"), (STREAM, "event-delay=0.8")]
    responses = asyncio.run(_in_flight(gateway, secret, requests))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[2].text.count("data: ") >= 2 and '"error"' not in responses[2].text
    _assert_clean_exit(gateway)
    rows = ledger(gateway, key_id)
    assert sorted(r.outcome for r in rows) == ["ok", "ok", "ok"]
    assert {r.request_id for r in rows} == {r.headers["x-request-id"] for r in responses}
    assert_books_balance(gateway, key_id, charged=3 * PRICE_NANOS)


def test_sigterm_cuts_what_outlives_the_graceful_timeout_and_records_it(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(args=("--graceful-timeout", "1"))
    key_id, secret = new_key(gateway, "cut", budget_nanos=10 * PRICE_NANOS)
    started = time.monotonic()
    (response,) = asyncio.run(_in_flight(gateway, secret, [(GENERATE, "delay=20")]))
    # Cut after the 1 s grace: a 503 to retry elsewhere, not a dropped connection or a 500.
    assert assert_google_envelope(response, 503)["status"] == "UNAVAILABLE"
    _assert_clean_exit(gateway)
    assert time.monotonic() - started < 10
    rows = ledger(gateway, key_id)
    assert [(r.outcome, r.status, r.cost_nanos) for r in rows] == [("cancelled", 499, 0)]
    assert_books_balance(gateway, key_id, charged=0)


# --- kill -9 -----------------------------------------------------------------------------------------


def test_kill_9_then_restart_loses_no_ledger_row_of_a_delivered_answer(tmp_path: Path) -> None:
    env = {
        "BANANAGATE_RESERVATION_TTL_SECONDS": "2",
        "BANANAGATE_SWEEP_INTERVAL_SECONDS": "0.5",
        "BANANAGATE_LOG_LEVEL": "warning",
        "BANANAGATE_CONSOLE": "false",
    }
    data_dir = tmp_path / "crash"
    gateway = start_gateway(data_dir, env=env)
    key_id, secret = new_key(gateway, "crash", budget_nanos=100 * PRICE_NANOS)

    async def traffic() -> list[httpx.Response | BaseException]:
        headers = {"x-goog-api-key": secret}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            calls = [
                asyncio.ensure_future(
                    client.post(
                        GENERATE, content=BODY, headers={**headers, "x-bananagate-emulate": f"delay={d}"}
                    )
                )
                for d in [0] * 6 + [0.3] * 4 + [6] * 8
            ]
            # Kill once the quick ones are answered and while the slow ones are in flight.
            deadline = time.monotonic() + 20
            while sum(c.done() for c in calls) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            os.kill(gateway.process.pid, signal.SIGKILL)
            return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        results = asyncio.run(traffic())
        gateway.process.wait(timeout=10)
        delivered = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(delivered) == 10 and len(lost) == 8, results  # some done, some cut by the kill
        restarted = start_gateway(data_dir, env=env)
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    try:
        rows = ledger(restarted, key_id)
        by_id = {r.request_id: r for r in rows}
        for response in delivered:  # every answer a client got has its row, charged once
            row = by_id[response.headers["x-request-id"]]
            assert row.outcome == "ok" and row.cost_nanos == PRICE_NANOS
        # The dead process's holds expire and the restarted one releases them.
        deadline = time.monotonic() + 15
        with Store.open(f"sqlite:///{data_dir / 'bananagate.db'}") as store:
            while store.reservations.held(key_id) and time.monotonic() < deadline:
                time.sleep(0.2)
        assert_books_balance(restarted, key_id, charged=len(rows) * PRICE_NANOS)
        again = httpx.post(
            restarted.url + GENERATE, content=BODY, headers={"x-goog-api-key": secret}, timeout=30
        )
        assert again.status_code == 200
    finally:
        stop_gateway(restarted)


# --- PostgreSQL stopped ----------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivateCluster:
    """A PostgreSQL cluster of this test's own, run as the `postgres` user from a temp dir."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin = bin_dir
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    bin_dir = _pg_bin()
    if bin_dir is None or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs PostgreSQL's initdb and root (to run it as the postgres user)")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user")
    # Under /tmp itself: pytest's temp dirs are private to root, out of the postgres user's reach.
    root = Path(tempfile.mkdtemp(prefix="bananagate-pg-"))
    cluster = PrivateCluster(root, bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *stop], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_stopped_is_503_unavailable_and_recovers(gateway_factory: GatewayFactory) -> None:
    with private_cluster() as cluster:
        gateway = gateway_factory(env={"BANANAGATE_DATABASE_URL": cluster.url})
        with Store.open(cluster.url) as store:
            record, secret = store.keys.create_key("pgdown", limits=KeyLimits(budget_nanos=10 * PRICE_NANOS))
        key = {"x-goog-api-key": secret}
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        client = httpx.Client(base_url=gateway.url, timeout=30)
        assert client.post(GENERATE, content=BODY, headers=key).status_code == 200

        cluster.stop()
        # A key seen this recently is still known without the database (BANANAGATE_KEY_CACHE_SECONDS).
        time.sleep(float(Settings.model_fields["key_cache_seconds"].default))
        started = time.monotonic()
        for method, path, headers in [
            ("POST", GENERATE, key),
            ("GET", "/v1beta/usage", key),
            ("GET", "/admin/keys", admin),
            ("GET", "/v1beta/models", key),
        ]:
            response = client.request(
                method, path, content=BODY if method == "POST" else None, headers=headers
            )
            error = assert_google_envelope(response, 503)
            assert error["status"] == "UNAVAILABLE"
        openai = client.post(
            "/v1/images/generations", json={"prompt": "x"}, headers={"authorization": f"Bearer {secret}"}
        )
        assert openai.status_code == 503 and openai.json()["error"]["type"]  # OpenAI's envelope
        assert time.monotonic() - started < 20  # refused promptly, not hung on the database
        assert client.get("/healthz").status_code == 200  # the process itself is fine

        cluster.start()
        deadline = time.monotonic() + 15
        while (response := client.post(GENERATE, content=BODY, headers=key)).status_code != 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.3)
        assert client.get("/v1beta/usage", headers=key).status_code == 200
        client.close()
        with Store.open(cluster.url) as store:
            rows = list(store.ledger.rows(key_id=record.id))
            held = store.reservations.held(record.id)
            spent = store.keys.get_key("pgdown")
        assert [r.outcome for r in rows] == ["ok", "ok"] and held == []
        assert spent is not None and spent.spent_nanos == 2 * PRICE_NANOS
        assert "Traceback" not in gateway.log()


# --- Redis stopped ---------------------------------------------------------------------------------


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_redis_stopped_limits_fall_back_per_process_and_budgets_stay_exact(
    gateway_factory: GatewayFactory,
) -> None:
    port = free_port()
    with private_redis(port) as redis_process:
        gateway = gateway_factory(
            env={"BANANAGATE_REDIS_URL": f"redis://127.0.0.1:{port}/0", "BANANAGATE_REDIS_PREFIX": "rel:"}
        )
        key_id, secret = new_key(gateway, "redisdown", rpm=3, budget_nanos=4 * PRICE_NANOS)
        post = lambda: httpx.post(  # noqa: E731
            gateway.url + GENERATE, content=BODY, headers={"x-goog-api-key": secret}, timeout=30
        )
        assert [post().status_code for _ in range(2)] == [200, 200]  # counted in Redis

        redis_process.kill()
        redis_process.wait()
        started = time.monotonic()
        codes = [post().status_code for _ in range(4)]
        assert time.monotonic() - started < 15  # no request waits long on the dead Redis
        # Per-process memory now: a fresh window of 3, then the limit holds again.
        assert codes == [200, 200, 429, 429], codes
        assert "Redis unavailable" in gateway.log()
        wait_for_ledger(gateway, key_id, 4)
        # The budget (4 images) is the database's: exact across the switch.
        assert_books_balance(gateway, key_id, charged=4 * PRICE_NANOS)

    with private_redis(port):
        # Back on Redis (empty: it kept nothing): the budget is what stops this key now...
        response = post()
        assert_google_envelope(response, 429)
        assert "budget" in response.json()["error"]["message"]
        # ...and the limits live in Redis again.
        _, other = new_key(gateway, "redisback", rpm=5)
        assert (
            httpx.post(gateway.url + GENERATE, content=BODY, headers={"x-goog-api-key": other}).status_code
            == 200
        )
        import redis

        client = redis.Redis(port=port)
        assert any(k.startswith(b"rel:") for k in client.keys("*"))
        client.close()
    assert_books_balance(gateway, key_id, charged=4 * PRICE_NANOS)


def test_a_postgres_that_never_answers_is_given_up_on_in_seconds() -> None:
    """A server that takes the TCP connection but never speaks (a hung host, a black hole behind
    a proxy): libpq alone would wait forever; the store's connect timeout makes it an error."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)  # the kernel completes handshakes; nobody ever answers
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timeout"):
            Store.open(f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x")
        assert time.monotonic() - started < 15


def test_unreachable_database_at_start_fails_the_start_loudly(gateway_factory: GatewayFactory) -> None:
    with pytest.raises(RuntimeError, match="gateway exited early"):
        gateway_factory(env={"BANANAGATE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
