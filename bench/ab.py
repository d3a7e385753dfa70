"""Paired A/B: is a change to bananagate faster? (`python -m bench.ab`)

Cells of `python -m bench` swing by ±15 % from one minute to the next on a shared 2-core machine,
more than most single changes move. Here two bananagates run side by side in front of one fake
upstream, and short wrk runs alternate between them (A, B, B, A, ...), so both see the same
machine. Each is reported as the median over rounds of its throughput and of its own CPU time per
request (user + system, from /proc, of the gateway's whole process tree), which is what a change
to the gateway's code moves and what the load on the other core does not.

A is another checkout's interpreter or source tree (`--a-python`, `--a-path`, e.g. a
`git worktree` of `main`), B is this one; either can get extra settings (`--a-env`, `--b-env`).

    python -m bench.ab --a-path /tmp/main-before --workload t2i --concurrency 8 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.load import LoadSpec, run_wrk, wrk_available
from bench.payloads import answer_json, answer_sse
from bench.procs import ProcessGroup, cpu_seconds
from bench.pyload import run_python_load
from bench.targets import Target, start_bananagate, start_upstream
from bench.workloads import Sizes, workloads, write_bodies


def _env_pairs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"not KEY=VALUE: {item!r}")
        out[key] = value
    return out


def _measure(target: Target, spec: LoadSpec, binary: str | None) -> dict[str, float]:
    pids = target.pids()
    before = cpu_seconds(pids)
    # wrk when installed; the Python load generator shares the gateway's cores and costs more
    # of them, but the CPU per request it reports is still the gateway's own.
    result = run_wrk(spec, binary) if binary is not None else run_python_load(spec)
    used = cpu_seconds(pids) - before
    served = max(result.requests, 1)
    return {
        "rps": result.throughput_rps,
        "cpu_ms_per_request": 1000 * used / served,
        "p50_ms": result.latency_ms["p50"] or 0.0,
        "errors": result.errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--a-python", default=sys.executable, help="interpreter of A (default: this one)")
    p.add_argument("--a-path", default=None, help="source tree put first on A's PYTHONPATH (its src/)")
    p.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workload", default="t2i", choices=["t2i", "i2i", "stream", "multi"])
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of load per run")
    p.add_argument(
        "--loadgen", default="auto", choices=["auto", "wrk", "python"], help="auto: wrk if installed"
    )
    p.add_argument("--rounds", type=int, default=6, help="each round runs A and B once")
    p.add_argument("--output", default=None, help="also write the rounds as JSON here")
    opts = p.parse_args(argv)
    binary = None if opts.loadgen == "python" else wrk_available()
    if binary is None and opts.loadgen == "wrk":
        raise SystemExit("wrk is not installed (apt-get install wrk, or run `python -m bench` once)")
    sizes = Sizes()
    workload = workloads(sizes)[opts.workload]
    group = ProcessGroup()
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        workdir = Path(tmp)
        try:
            upstream = start_upstream(group, workdir, answer_json(sizes.answer), answer_sse(sizes.answer))
            a_env = _env_pairs(opts.a_env)
            if opts.a_path:
                # Only A's own process sees its tree first; the harness keeps importing its own.
                a_env["PYTHONPATH"] = f"{Path(opts.a_path).resolve() / 'src'}{os.pathsep}{Path.cwd()}"
            targets = {
                "A": start_bananagate(
                    group, workdir, upstream, python=opts.a_python, extra_env=a_env, name="A"
                ),
                "B": start_bananagate(group, workdir, upstream, extra_env=_env_pairs(opts.b_env), name="B"),
            }
            body = write_bodies([workload], workdir / "bodies")[workload.name]
            specs = {
                name: LoadSpec(
                    url=target.url + workload.path,
                    body_path=body,
                    headers=target.headers,
                    concurrency=opts.concurrency,
                    duration_s=opts.seconds,
                )
                for name, target in targets.items()
            }
            for name, target in targets.items():  # warm-up, unmeasured
                _measure(target, specs[name], binary)
            rounds: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
            for index in range(opts.rounds):
                order = ("A", "B") if index % 2 == 0 else ("B", "A")
                for name in order:
                    rounds[name].append(_measure(targets[name], specs[name], binary))
                a, b = rounds["A"][-1], rounds["B"][-1]
                print(
                    f"round {index + 1}: A {a['rps']:7.1f} req/s {a['cpu_ms_per_request']:.3f} ms CPU | "
                    f"B {b['rps']:7.1f} req/s {b['cpu_ms_per_request']:.3f} ms CPU",
                    flush=True,
                )
        finally:
            group.close()
    summary = {
        name: {
            key: statistics.median(r[key] for r in runs) for key in ("rps", "cpu_ms_per_request", "p50_ms")
        }
        for name, runs in rounds.items()
    }
    errors = {name: sum(r["errors"] for r in runs) for name, runs in rounds.items()}
    a, b = summary["A"], summary["B"]
    print(
        f"{opts.workload} c={opts.concurrency}, medians of {opts.rounds} rounds:\n"
        f"  A: {a['rps']:.1f} req/s, {a['cpu_ms_per_request']:.3f} ms CPU/request, p50 {a['p50_ms']:.2f} ms"
        f" ({errors['A']} errors)\n"
        f"  B: {b['rps']:.1f} req/s, {b['cpu_ms_per_request']:.3f} ms CPU/request, p50 {b['p50_ms']:.2f} ms"
        f" ({errors['B']} errors)\n"
        f"  B/A: throughput {b['rps'] / a['rps']:.3f},"
        f" CPU per request {b['cpu_ms_per_request'] / a['cpu_ms_per_request']:.3f}"
    )
    if opts.output:
        Path(opts.output).write_text(
            json.dumps({"summary": summary, "rounds": rounds, "errors": errors}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
