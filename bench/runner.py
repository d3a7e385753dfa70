"""One benchmark run: start the targets, drive every (workload, concurrency, target) cell with the
same load, measure peak RSS per cell, optionally profile bananagate, write the results file."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import profile as prof
from bench.load import LoadSpec, run_load, wrk_available
from bench.nginx import start_nginx
from bench.payloads import MB, answer_json, answer_sse
from bench.peer import start_peer
from bench.procs import ProcessGroup, cpu_seconds, peak_rss_bytes, reset_peak_rss
from bench.report import (
    SCHEMA_VERSION,
    add_ratios,
    markdown_table,
    summary_table,
    text_table,
    write_results,
)
from bench.targets import CHANNEL_NAME, Skipped, Target, start_bananagate, start_upstream
from bench.tools import ensure_debian_tool
from bench.workloads import WORKLOAD_NAMES, Sizes, Workload, workloads, write_bodies

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BASE_TARGETS = ("direct", "nginx", "bananagate")


@dataclass
class Options:
    workloads: list[str] = field(default_factory=lambda: list(WORKLOAD_NAMES))
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 64])
    duration: float = 10.0
    warmup: float = 2.0
    targets: list[str] = field(default_factory=lambda: list(BASE_TARGETS))
    peers: list[str] = field(default_factory=list)
    loadgen: str = "auto"  # auto | wrk | python
    sizes: Sizes = field(default_factory=Sizes)
    upstream_delay: float = 0.0
    max_inflight_mb: float = 1024.0
    max_duration: float = 30.0  # a cell may be stretched up to this when answers are slow
    profile: list[str] = field(default_factory=list)
    profile_concurrency: int = 8
    profile_duration: float = 15.0
    results_dir: Path = RESULTS_DIR
    output: Path | None = None
    allow_install: bool = True
    quick: bool = False
    gateway_python: str = sys.executable
    gateway_env: dict[str, str] = field(default_factory=dict)
    # Extra bananagate instances measured beside the main one: name -> (python or None, env).
    variants: dict[str, tuple[str | None, dict[str, str]]] = field(default_factory=dict)
    profile_target: str = "bananagate"
    emulator: bool = False
    note: str = ""


Log = Callable[[str], None]


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d-%H%M%S")


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mb"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    return info


def git_info() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.decode().strip()

    return {
        "commit": run("rev-parse", "HEAD") or None,
        "dirty_files": len(run("status", "--porcelain").splitlines()),
    }


def validate(target: Target, workload: Workload, body: bytes) -> dict[str, Any]:
    """One request before the load: must be a 200 carrying an image (and, for bananagate, served by
    the bench channel when it runs in channel mode)."""
    try:
        response = httpx.post(
            target.url + target.path(workload), content=body, headers=target.headers, timeout=120
        )
    except httpx.HTTPError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    content = response.content
    ok = response.status_code == 200 and (b'"inlineData"' in content or b'"inline_data"' in content)
    if workload.stream:
        ok = ok and content.startswith(b"data:")
    out: dict[str, Any] = {"ok": ok, "status": response.status_code, "bytes": len(content)}
    channel = response.headers.get("x-bananagate-channel")
    if channel is not None:
        out["channel"] = channel
    if (
        target.name.startswith("bananagate")
        and target.info.get("mode") == "channel"
        and channel != CHANNEL_NAME
    ):
        out["ok"] = False
        out["error"] = f"served by channel {channel!r}, not {CHANNEL_NAME!r}"
    if not ok and "error" not in out:
        out["error"] = content[:300].decode(errors="replace")
    return out


def start_targets(
    opts: Options, group: ProcessGroup, workdir: Path, notes: list[str], log: Log
) -> tuple[Target, list[Target], dict[str, Any]]:
    """The fake upstream plus every requested target that could start; `status` says what happened to each."""
    status: dict[str, Any] = {}
    log("starting the fake upstream")
    upstream = start_upstream(
        group,
        workdir,
        answer_json(opts.sizes.answer),
        answer_sse(opts.sizes.answer),
        delay=opts.upstream_delay,
    )
    targets: list[Target] = []
    if "direct" in opts.targets:
        targets.append(upstream)
    status["direct"] = {"started": True, "label": upstream.label, **upstream.info}
    starters: list[tuple[str, Callable[[], Target]]] = []
    if "nginx" in opts.targets:
        starters.append(
            (
                "nginx",
                partial(start_nginx, group, workdir, upstream, allow_install=opts.allow_install, log=notes),
            )
        )
    if "bananagate" in opts.targets:
        bananagate = partial(
            start_bananagate,
            group,
            workdir,
            upstream,
            python=opts.gateway_python,
            force_emulator=opts.emulator,
            extra_env=opts.gateway_env,
        )
        starters.append(("bananagate", bananagate))
    for variant, (python, env) in opts.variants.items():
        name = f"bananagate-{variant}"
        start_variant = partial(
            start_bananagate,
            group,
            workdir,
            upstream,
            python=python or opts.gateway_python,
            force_emulator=opts.emulator,
            extra_env={**opts.gateway_env, **env},
            name=name,
        )
        starters.append((name, start_variant))
    for peer in opts.peers:
        starters.append(
            (
                peer,
                partial(
                    start_peer, peer, group, workdir, upstream, allow_install=opts.allow_install, log=notes
                ),
            )
        )
    for name, start in starters:
        log(f"starting {name}")
        try:
            target = start()
        except Skipped as exc:
            log(f"  skipped: {exc}")
            status[name] = {"started": False, "reason": str(exc)}
            continue
        targets.append(target)
        status[name] = {"started": True, "label": target.label, **target.info}
        if target.name.startswith("bananagate") and target.info.get("mode") != "channel":
            notes.append(
                "bananagate ran on its built-in EMULATOR (no channel support found: "
                f"{target.info.get('mode_reason')}); its numbers measure image generation, not forwarding"
            )
    return upstream, targets, status


ROUNDS = 10  # a cell lasts long enough for each connection to get about this many answers


def measure_cell(
    target: Target, spec: LoadSpec, generator: str, warmup: float, max_duration: float
) -> dict[str, Any]:
    """Warm up, reset the peak RSS, measure. A closed loop only counts answers that complete
    before the end, so when the warm-up shows answers taking seconds the cell is stretched (up to
    `max_duration`) until each connection gets about ROUNDS answers: a run as short as one answer
    would undercount throughput by up to half."""
    duration = spec.duration_s
    if warmup > 0:
        warm = run_load(
            LoadSpec(spec.url, spec.body_path, spec.headers, spec.concurrency, warmup, spec.timeout_s),
            generator,
        )
        p50 = warm.latency_ms["p50"]
        wanted = max_duration if p50 is None else ROUNDS * p50 / 1000
        duration = max(duration, min(max_duration, wanted))
        spec = LoadSpec(spec.url, spec.body_path, spec.headers, spec.concurrency, duration, spec.timeout_s)
    pids = target.pids()
    reset_ok = reset_peak_rss(pids)
    # Right after the reset VmHWM is the RSS of the moment: memory kept from earlier cells.
    before = peak_rss_bytes(pids)
    cpu = cpu_seconds(pids)
    load = run_load(spec, generator)
    # The target's own CPU (all its processes) per answer: what a request costs it, whatever
    # the other processes on these cores took (a second worker shows whether it costs more).
    cpu = cpu_seconds(pids) - cpu
    return {
        "load": load.to_dict(),
        "cpu_ms_per_request": round(1000 * cpu / load.requests, 3) if load.requests and cpu > 0 else None,
        "peak_rss_bytes": peak_rss_bytes(pids),
        "rss_before_bytes": before,
        "duration_planned_s": round(duration, 1),
        "rss_reset": reset_ok,
        "pids": len(pids),
    }


def run(opts: Options, log: Log = print) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    notes: list[str] = []
    generator = opts.loadgen
    if generator != "python" and opts.allow_install and not wrk_available():
        ensure_debian_tool("wrk", "wrk", allow_install=True, log=notes)
    if generator == "auto":
        generator = "wrk" if wrk_available() else "python"
        if generator == "python":
            notes.append(
                "wrk is not installed: the Python load generator was used (`apt-get install -y wrk`)"
            )
    elif generator == "wrk" and not wrk_available():
        raise SystemExit("--loadgen wrk: wrk is not installed")
    all_workloads = workloads(opts.sizes)
    selected = [all_workloads[name] for name in opts.workloads]
    machine = machine_info()
    cpus = machine.get("cpus") or 1
    if machine.get("loadavg") and machine["loadavg"][0] > 0.5 * cpus:
        notes.append(
            f"the machine was busy at the start (load average {machine['loadavg'][0]} on {cpus} CPUs): "
            "numbers are noisy"
        )
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "started_at": started.isoformat(timespec="seconds"),
        "quick": opts.quick,
        "note": opts.note,
        "machine": machine,
        "git": git_info(),
        "loadgen": generator,
        "options": {
            "workloads": opts.workloads,
            "concurrency": opts.concurrency,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "max_duration_s": opts.max_duration,
            "sizes_bytes": asdict(opts.sizes),
            "upstream_delay_s": opts.upstream_delay,
            "max_inflight_mb": opts.max_inflight_mb,
            "gateway_env": opts.gateway_env,
            "variants": {k: {"python": py, "env": env} for k, (py, env) in opts.variants.items()},
        },
        "workloads": {w.name: {"title": w.title, "path": w.path} for w in selected},
        "targets": {},
        "measurements": [],
        "skipped": [],
        "profile": [],
        "notes": notes,
    }
    group = ProcessGroup()
    with tempfile.TemporaryDirectory(prefix="bananagate-bench-") as tmp:
        workdir = Path(tmp)
        try:
            log("writing request bodies")
            bodies = write_bodies(selected, workdir / "bodies")
            for w in selected:
                results["workloads"][w.name]["request_bytes"] = bodies[w.name].stat().st_size
            _, targets, status = start_targets(opts, group, workdir, notes, log)
            results["targets"] = status
            _measure_all(opts, generator, selected, bodies, targets, results, log)
            bananagate = next((t for t in targets if t.name == opts.profile_target), None)
            if opts.profile:
                if bananagate is None:
                    notes.append(f"--profile: {opts.profile_target} is not running, nothing to profile")
                else:
                    _profile(opts, generator, all_workloads, bodies, workdir, bananagate, results, notes, log)
        finally:
            group.close()
    add_ratios(results["measurements"])
    finished = dt.datetime.now(dt.UTC)
    results["finished_at"] = finished.isoformat(timespec="seconds")
    with contextlib.suppress(OSError):
        results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    path = opts.output or opts.results_dir / f"{_stamp(started)}.json"
    write_results(results, path)
    results["path"] = str(path)
    return results


def _measure_all(
    opts: Options,
    generator: str,
    selected: list[Workload],
    bodies: dict[str, Path],
    targets: list[Target],
    results: dict[str, Any],
    log: Log,
) -> None:
    # Interleaved (every target for one cell, then the next cell) so that a noisy moment on a
    # shared machine hits all targets of a cell alike rather than one target's whole series.
    for workload in selected:
        body = bodies[workload.name].read_bytes()
        usable: list[Target] = []
        for target in targets:
            check = validate(target, workload, body)
            results["targets"][target.name].setdefault("validation", {})[workload.name] = check
            if check["ok"]:
                usable.append(target)
            else:
                log(f"  {target.name} fails {workload.name}: {check.get('error')}")
                results["skipped"].append(
                    {
                        "target": target.name,
                        "workload": workload.name,
                        "reason": f"validation failed: {check.get('error')}",
                    }
                )
        for concurrency in opts.concurrency:
            inflight_mb = concurrency * len(body) / MB
            if inflight_mb > opts.max_inflight_mb:
                reason = (
                    f"{concurrency} × {len(body) / MB:.1f} MB in flight exceeds "
                    f"--max-inflight-mb {opts.max_inflight_mb:g}"
                )
                log(f"skip {workload.name} c={concurrency}: {reason}")
                results["skipped"].append(
                    {"workload": workload.name, "concurrency": concurrency, "reason": reason}
                )
                continue
            for target in usable:
                spec = LoadSpec(
                    target.url + target.path(workload),
                    bodies[workload.name],
                    target.headers,
                    concurrency,
                    opts.duration,
                )
                log(f"{workload.name:7s} c={concurrency:<3d} {target.name:10s} ...")
                row: dict[str, Any] = {
                    "target": target.name,
                    "workload": workload.name,
                    "concurrency": concurrency,
                }
                try:
                    row.update(measure_cell(target, spec, generator, opts.warmup, opts.max_duration))
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    row["error"] = str(exc)[:500]
                    log(f"  failed: {row['error']}")
                else:
                    load = row["load"]
                    if load["requests"] < 2 * concurrency:
                        row["warning"] = (
                            f"only {load['requests']} answers completed on {concurrency} connections "
                            f"in {load['duration_s']:.0f} s (answers take about as long as the run): "
                            "use a longer --duration"
                        )
                        log(f"  warning: {row['warning']}")
                    log(
                        f"  {load['throughput_rps']:8.1f} req/s  p50 {_ms(load['latency_ms']['p50'])} ms  "
                        f"p99 {_ms(load['latency_ms']['p99'])} ms  errors {load['errors']}"
                    )
                results["measurements"].append(row)


def _ms(value: float | None) -> str:
    return "      –" if value is None else f"{value:7.1f}"


def _profile(
    opts: Options,
    generator: str,
    all_workloads: dict[str, Workload],
    bodies: dict[str, Path],
    workdir: Path,
    bananagate: Target,
    results: dict[str, Any],
    notes: list[str],
    log: Log,
) -> None:
    binary = prof.find_pyspy(allow_install=opts.allow_install, log=notes)
    if binary is None or bananagate.pid is None:
        notes.append("--profile: py-spy is not available (pip install py-spy), no profile taken")
        return
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(dt.datetime.now(dt.UTC))
    for name in opts.profile:
        workload = all_workloads[name]
        if name not in bodies:
            bodies.update(write_bodies([workload], workdir / "bodies"))
        spec = LoadSpec(
            bananagate.url + bananagate.path(workload),
            bodies[name],
            bananagate.headers,
            opts.profile_concurrency,
            opts.profile_duration + 2,
        )
        cell = f"{bananagate.name}-{name}-c{opts.profile_concurrency}"
        raw = opts.results_dir / f"{stamp}-profile-{cell}.collapsed.txt"
        log(
            f"profiling {bananagate.name} on {name} c={opts.profile_concurrency} "
            f"for {opts.profile_duration:g} s (py-spy)"
        )
        if opts.warmup > 0:
            run_load(
                LoadSpec(spec.url, spec.body_path, spec.headers, spec.concurrency, opts.warmup), generator
            )
        spy = prof.start_pyspy(binary, bananagate.pid, opts.profile_duration, raw, workdir / "py-spy.log")
        time.sleep(0.5)  # let py-spy attach before the load starts
        load = run_load(spec, generator)
        try:
            spy.wait(timeout=opts.profile_duration + 60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        if spy.returncode != 0 or not raw.exists():
            tail = (workdir / "py-spy.log").read_text(errors="replace")[-400:]
            notes.append(f"--profile {name}: py-spy failed ({spy.returncode}): {tail}")
            continue
        raw.write_text(prof.shorten_paths(raw.read_text()))
        summary = prof.summarise(raw.read_text())
        # The load ran a little longer than py-spy; count the requests of the sampled window.
        in_window = load.throughput_rps * opts.profile_duration
        title = f"{bananagate.name}, {workload.title}, concurrency {opts.profile_concurrency}"
        text_path = raw.with_name(raw.name.replace(".collapsed.txt", ".summary.txt"))
        text_path.write_text(prof.summary_text(title, summary, in_window))
        log(prof.summary_text(title, summary, in_window, top=12))
        results["profile"].append(
            {
                "target": bananagate.name,
                "workload": name,
                "concurrency": opts.profile_concurrency,
                "duration_s": opts.profile_duration,
                "load_during_profile": load.to_dict(),
                "collapsed_stacks": str(raw.relative_to(REPO)) if raw.is_relative_to(REPO) else str(raw),
                "summary_file": str(text_path.relative_to(REPO))
                if text_path.is_relative_to(REPO)
                else str(text_path),
                "cpu_ms_per_request": prof.cpu_ms_per_request(summary, in_window),
                "summary": summary.to_dict(),
            }
        )


def print_report(results: dict[str, Any], log: Log = print) -> None:
    log("")
    log(text_table(results["measurements"]))
    for note in results["notes"]:
        log(f"note: {note}")
    for skipped in results["skipped"]:
        log(f"skipped: {skipped}")
    for name, status in results["targets"].items():
        if not status.get("started"):
            log(f"target {name} not run: {status.get('reason')}")
    log(f"results: {results['path']}")


def readme_table(results: dict[str, Any]) -> str:
    """The README's summary (one row per cell), then every measurement."""
    return summary_table(results["measurements"]) + "\n\n" + markdown_table(results["measurements"])
