"""Unit tests of the benchmark harness's parts: the fake upstream and the Python load generator
(against each other, on loopback), ratios, the profile summary, and skipping missing tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.load import LoadSpec, wrk_script
from bench.nginx import start_nginx
from bench.payloads import answer_json, answer_sse, split_sse
from bench.procs import ProcessGroup
from bench.profile import module_of, shorten_paths, summarise
from bench.pyload import percentile, run_python_load
from bench.report import add_ratios, markdown_table, text_table
from bench.targets import Skipped, Target, channel_toml, start_upstream
from bench.workloads import Sizes, workloads, write_bodies

SMALL = Sizes(answer=20_000, image=10_000, multi_image=10_000)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Any:
    group = ProcessGroup()
    workdir = tmp_path_factory.mktemp("upstream")
    try:
        yield start_upstream(group, workdir, answer_json(SMALL.answer), answer_sse(SMALL.answer))
    finally:
        group.close()


def test_upstream_answers_json_and_sse(upstream: Target, tmp_path: Path) -> None:
    wl = workloads(SMALL)
    with httpx.Client(timeout=10) as client:
        plain = client.post(upstream.url + wl["i2i"].path, content=wl["i2i"].body())
        assert plain.status_code == 200
        assert plain.json()["candidates"][0]["finishReason"] == "STOP"
        streamed = client.post(upstream.url + wl["stream"].path, content=b"{}")
        assert streamed.status_code == 200
        assert streamed.headers["content-type"] == "text/event-stream"
        assert streamed.content.count(b"data: ") == 2
        assert streamed.content.endswith(b"\r\n\r\n")
        # A chunked request body is read to its end too, and the connection stays usable.
        chunked = client.post(upstream.url + wl["t2i"].path, content=iter([b'{"contents":', b"[]}"]))
        assert chunked.status_code == 200
        assert client.get(upstream.url + "/healthz").status_code == 200


@pytest.mark.parametrize("workload", ["t2i", "stream"])
def test_python_load_generator(upstream: Target, tmp_path: Path, workload: str) -> None:
    wl = workloads(SMALL)[workload]
    bodies = write_bodies([wl], tmp_path)
    result = run_python_load(
        LoadSpec(upstream.url + wl.path, bodies[workload], {"x-goog-api-key": "k"}, 2, 0.3)
    )
    assert result.errors == 0
    assert result.requests > 0
    assert result.bytes_read >= result.requests * SMALL.answer * 0.9
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) == 0


def test_payload_sizes_are_close_to_what_was_asked() -> None:
    body = answer_json(1_000_000)
    assert 990_000 < len(body) < 1_010_000
    frames = split_sse(answer_sse(100_000))
    assert len(frames) == 2 and all(f.startswith(b"data: ") and f.endswith(b"\r\n\r\n") for f in frames)
    multi = workloads(Sizes(multi_image=200_000))["multi"].body()
    assert 590_000 < len(multi) < 610_000


def _m(target: str, rps: float, p50: float, rss: int, cpu: float | None = None) -> dict[str, Any]:
    load = {
        "throughput_rps": rps,
        "latency_ms": {"p50": p50, "p99": p50 * 2},
        "bytes_read": 1000,
        "duration_s": 1.0,
        "errors": 0,
    }
    return {
        "target": target,
        "workload": "t2i",
        "concurrency": 8,
        "load": load,
        "peak_rss_bytes": rss,
        "cpu_ms_per_request": cpu,
    }


def test_ratios_against_references_of_the_same_cell() -> None:
    rows = [
        _m("direct", 1000, 1.0, 20_000_000),
        _m("nginx", 500, 2.0, 10_000_000, cpu=0.5),
        _m("bananagate", 100, 10.0, 100_000_000, cpu=2.25),
    ]
    add_ratios(rows)
    gateway = rows[2]
    assert gateway["ratios"]["vs_nginx"] == {
        "throughput": 0.2,
        "p50": 5.0,
        "p99": 5.0,
        "peak_rss": 10.0,
        "cpu_per_request": 4.5,
    }
    assert gateway["ratios"]["vs_direct"]["cpu_per_request"] is None  # not measured there
    assert gateway["ratios"]["vs_direct"]["throughput"] == 0.1
    assert gateway["added_latency_ms"] == {"p50": 9.0, "p99": 18.0}
    assert "vs_direct" not in rows[0]["ratios"]
    table = text_table(rows)
    assert "bananagate" in table and "0.20" in table and "CPU ms/req" in table and "2.25" in table
    assert markdown_table(rows).startswith("| target |")


def test_variants_are_compared_with_the_default_bananagate() -> None:
    rows = [
        _m("nginx", 500, 2.0, 10_000_000),
        _m("bananagate", 100, 10.0, 100_000_000),
        _m("bananagate-w2", 170, 6.0, 180_000_000),
    ]
    add_ratios(rows)
    assert rows[2]["ratios"]["vs_bananagate"]["throughput"] == 1.7
    assert "vs_bananagate" not in rows[1]["ratios"]  # the default is not its own reference
    assert "thr. × bananagate" in text_table(rows) and "1.70" in text_table(rows)


def test_profile_summary_counts_self_and_inclusive_time() -> None:
    collapsed = "\n".join(
        [
            "thread (1): MainThread;run (/x/lib/python3.11/asyncio/base_events.py:1);"
            "dispatch (/repo/src/bananagate/server/gemini.py:2);scan_usage (/repo/src/bananagate/protocol/scan.py:3) 30",
            "thread (1): MainThread;run (/x/lib/python3.11/asyncio/base_events.py:1);"
            "dispatch (/repo/src/bananagate/server/gemini.py:2) 10",
            "thread (2): AnyIO worker thread 1;Condition.wait (/x/lib/python3.11/threading.py:320) 500",
            "thread (3): AnyIO worker thread 2;do_execute (/v/site-packages/sqlalchemy/engine/default.py:9) 10",
        ]
    )
    summary = summarise(collapsed)
    assert summary.samples == 550 and summary.waiting == 500 and summary.busy == 50
    assert summary.self_by_function["bananagate.protocol.scan:scan_usage"] == 30
    assert summary.inclusive_by_function["bananagate.server.gemini:dispatch"] == 40
    assert summary.self_by_group["sqlalchemy"] == 10
    assert summary.busy_by_thread["AnyIO worker thread"] == 10
    assert module_of("/r/.venv/lib/python3.11/site-packages/starlette/routing.py") == "starlette.routing"
    assert module_of("bananagate/server/app.py") == "bananagate.server.app"


def test_missing_nginx_is_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("bench.nginx.ensure_debian_tool", lambda *a, **k: None)
    upstream = Target("direct", "x", "http://127.0.0.1:9", None)
    with pytest.raises(Skipped, match="nginx is not installed"):
        start_nginx(ProcessGroup(), tmp_path, upstream, allow_install=False, log=[])


def test_channel_config_is_valid_for_this_bananagate() -> None:
    config = pytest.importorskip("bananagate.config")
    parsed = config.parse_config(channel_toml("http://127.0.0.1:1234"))
    (channel,) = parsed.channels
    assert channel.kind == "gemini-compatible"
    assert channel.resolved_base_url == "http://127.0.0.1:1234"


def test_wrk_script_quotes_values(tmp_path: Path) -> None:
    spec = LoadSpec("http://127.0.0.1:1/x", tmp_path / 'a "b".json', {"x-goog-api-key": "sk-1"}, 1, 1)
    script = wrk_script(spec)
    assert '\\"b\\"' in script and 'wrk.headers["x-goog-api-key"] = "sk-1"' in script
    with pytest.raises(ValueError):
        wrk_script(LoadSpec("http://x/", tmp_path / "a", {"h": "bad\nvalue"}, 1, 1))


def test_shortened_stacks_summarise_the_same() -> None:
    collapsed = (
        "thread (7): MainThread;run (/x/lib/python3.11/asyncio/base_events.py:1);"
        "f (/repo/src/bananagate/protocol/scan.py:3) 2\n"
        "thread (8): MainThread;run (/y/lib/python3.11/asyncio/base_events.py:1);"
        "f (/other/src/bananagate/protocol/scan.py:3) 3\n"
    )
    short = shorten_paths(collapsed)
    assert short == "thread: MainThread;run (asyncio/base_events.py:1);f (bananagate/protocol/scan.py:3) 5\n"
    assert summarise(short).self_by_function == summarise(collapsed).self_by_function
    assert summarise(short).busy_by_thread == summarise(collapsed).busy_by_thread


def test_inprocess_bench_drives_the_app(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The socket-free measure of the request path: every call must be a 200 the app really
    # handled, or the numbers would time an error path.
    import asyncio

    from bench import inprocess

    statuses: list[int] = []
    original = inprocess.call

    async def counted(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        statuses.append(await original(app, headers, body))
        return statuses[-1]

    monkeypatch.setattr(inprocess, "call", counted)
    result = asyncio.run(inprocess.measure(requests=40, concurrency=4, console=False, profile=None))
    assert result["requests"] == 40 and result["cpu_us"] > 0 and result["wall_us"] > 0
    assert len(statuses) > 40 and set(statuses) == {200}  # the warm-up's calls, then the 40
    assert inprocess.main(["--requests", "16", "--concurrency", "2"]) == 0
    assert "16 t2i requests, c=2" in capsys.readouterr().out
    statuses.clear()
    assert inprocess.main(["--requests", "8", "--concurrency", "2", "--workload", "i2i"]) == 0
    assert "8 i2i requests, c=2" in capsys.readouterr().out and set(statuses) == {200}
    # Who decodes Base64 on the i2i path: the check of the request's inline image, among others.
    assert (
        inprocess.main(
            ["--requests", "8", "--concurrency", "1", "--workload", "i2i", "--callers", "b64decode"]
        )
        == 0
    )
    callers = capsys.readouterr().out.split("was called by...", 1)[1]
    assert "b64decode" in callers and "is_strict_base64" in callers


def test_ab_compares_two_gateways_with_the_python_load_generator(tmp_path: Path) -> None:
    # Two bananagates side by side (A with the gallery off), one short round each way: every run
    # answered, and both sides' throughput and CPU per request are reported.
    import json

    from bench import ab

    out = tmp_path / "ab.json"
    argv = ["--loadgen", "python", "--rounds", "1", "--seconds", "1", "--concurrency", "2"]
    argv += ["--a-env", "BANANAGATE_CONSOLE=false", "--output", str(out)]
    assert ab.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == {"A": 0, "B": 0}
    for side in ("A", "B"):
        assert len(report["rounds"][side]) == 1
        assert report["summary"][side]["rps"] > 0 and report["summary"][side]["cpu_ms_per_request"] > 0
