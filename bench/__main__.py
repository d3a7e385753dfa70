"""`python -m bench`: bananagate against a fake upstream, nginx and (optionally) a peer gateway.

    python -m bench                         # full run: 4 workloads × concurrency 1, 8, 64, 10 s each
    python -m bench --quick                 # CI smoke run: small payloads, concurrency 2, 1 s each
    python -m bench --workloads t2i,i2i --concurrency 8 --profile t2i,i2i
    python -m bench --peer litellm          # also the LiteLLM proxy (installed under ~/.cache)

Results go to bench/results/<date>.json (see bench/report.py for what each field means).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bench.payloads import MB
from bench.peer import PEERS
from bench.runner import BASE_TARGETS, RESULTS_DIR, Options, print_report, readme_table, run
from bench.workloads import WORKLOAD_NAMES, Sizes

QUICK_SIZES = Sizes(answer=MB // 2, image=MB // 2, multi_image=2 * MB)


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(allowed)})"
        )
    return names


def _env_pairs(text: str) -> dict[str, str]:
    """`KEY=VALUE[,KEY=VALUE...]`."""
    out: dict[str, str] = {}
    for pair in (p for p in text.split(",") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"not KEY=VALUE: {pair!r}")
        out[key.strip()] = value
    return out


def _variant(text: str) -> tuple[str, str | None, dict[str, str]]:
    """`NAME:KEY=VALUE,...`; the key `python` names the interpreter instead of a variable."""
    name, sep, spec = text.partition(":")
    if not sep or not name.strip() or not name.replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"--variant wants NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    env = _env_pairs(spec)
    python = env.pop("python", None)
    return name.strip(), python, env


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark bananagate against a fake Gemini upstream, nginx and peers (127.0.0.1 only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: small payloads, concurrency 2, 1 s per cell, no installs",
    )
    p.add_argument(
        "--workloads",
        default=None,
        help=f"comma-separated, from {','.join(WORKLOAD_NAMES)} ('none': only --profile)",
    )
    p.add_argument(
        "--concurrency", type=_ints, default=None, help="comma-separated connection counts (default 1,8,64)"
    )
    p.add_argument(
        "--duration", type=float, default=None, help="seconds of load per cell (default 10; quick 1)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unmeasured load before each cell (default 2; quick 0)",
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=30.0,
        help="a cell whose warm-up shows slow answers runs until each connection got ~10 of them, "
        "up to this many seconds",
    )
    p.add_argument(
        "--targets", default=",".join(BASE_TARGETS), help="which of direct,nginx,bananagate to run"
    )
    p.add_argument(
        "--peer", action="append", default=[], choices=PEERS, help="also run a peer gateway (repeatable)"
    )
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    p.add_argument(
        "--answer-mb", type=float, default=None, help="size of the upstream's image answer (default 1.4)"
    )
    p.add_argument("--image-mb", type=float, default=None, help="input image size for i2i (default 1.4)")
    p.add_argument(
        "--multi-image-mb",
        type=float,
        default=None,
        help="size of each of the 3 images of 'multi' (default 7)",
    )
    p.add_argument(
        "--upstream-delay", type=float, default=0.0, help="seconds the fake upstream waits before answering"
    )
    p.add_argument(
        "--max-inflight-mb",
        type=float,
        default=1024.0,
        help="skip cells whose concurrency × request size exceeds this",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="t2i",
        default="",
        metavar="WORKLOADS",
        help="py-spy bananagate on these workloads (default t2i)",
    )
    p.add_argument("--profile-concurrency", type=int, default=8)
    p.add_argument("--profile-duration", type=float, default=15.0)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--output", type=Path, default=None, help="results file (default <results-dir>/<date>.json)"
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never install nginx, wrk, py-spy or peers (implied by --quick)",
    )
    p.add_argument(
        "--gateway-python", default=sys.executable, help="interpreter that runs `bananagate serve`"
    )
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a BANANAGATE_* setting for the gateway (repeatable), e.g. BANANAGATE_CONSOLE=false",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="also measure bananagate-NAME with these settings beside the default one (repeatable); "
        "python=PATH picks its interpreter, e.g. fast:python=/venv/bin/python",
    )
    p.add_argument(
        "--profile-target", default="bananagate", help="which bananagate to profile (e.g. bananagate-NAME)"
    )
    p.add_argument(
        "--emulator", action="store_true", help="bench bananagate's built-in emulator instead of a channel"
    )
    p.add_argument("--note", default="", help="free text stored in the results (e.g. 'loaded machine')")
    p.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (for the README)"
    )
    return p


def options_from(args: argparse.Namespace) -> Options:
    quick = bool(args.quick)
    base = QUICK_SIZES if quick else Sizes()
    sizes = Sizes(
        answer=int(args.answer_mb * MB) if args.answer_mb else base.answer,
        image=int(args.image_mb * MB) if args.image_mb else base.image,
        multi_image=int(args.multi_image_mb * MB) if args.multi_image_mb else base.multi_image,
    )
    workloads = (
        list(WORKLOAD_NAMES) if args.workloads is None else _names(args.workloads, WORKLOAD_NAMES, "workload")
    )
    return Options(
        workloads=workloads,
        concurrency=args.concurrency or ([2] if quick else [1, 8, 64]),
        duration=args.duration if args.duration is not None else (1.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.0 if quick else 2.0),
        max_duration=args.max_duration,
        targets=_names(args.targets, BASE_TARGETS, "target"),
        peers=list(dict.fromkeys(args.peer)),
        loadgen=args.loadgen,
        sizes=sizes,
        upstream_delay=args.upstream_delay,
        max_inflight_mb=args.max_inflight_mb,
        profile=_names(args.profile, WORKLOAD_NAMES, "workload"),
        profile_concurrency=args.profile_concurrency,
        profile_duration=args.profile_duration,
        results_dir=args.results_dir,
        output=args.output,
        allow_install=not (args.no_install or quick),
        quick=quick,
        gateway_python=args.gateway_python,
        gateway_env=_env_pairs(",".join(args.gateway_env)),
        variants={name: (python, env) for name, python, env in (_variant(v) for v in args.variant)},
        profile_target=args.profile_target,
        emulator=args.emulator,
        note=args.note,
    )


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        opts = options_from(args)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    if not opts.workloads and not opts.profile:
        p.error("nothing to do: no workloads and no --profile")
    # SIGTERM unwinds like Ctrl-C, so the child processes (own sessions) are stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    results = run(opts, log=lambda line: print(line, flush=True))
    print_report(results)
    if args.markdown:
        print()
        print(readme_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
