"""Turning measurements into the report: ratios against the references measured in the same run,
the console table, the Markdown table for the README, and the results file.

A measurement is one (target, workload, concurrency) cell. Its ratios compare it with the other
targets' cells of the same workload and concurrency:

* `vs_direct`: the fake upstream with nothing in front; `added_p50_ms` / `added_p99_ms` are the
  latency the proxy adds, `throughput` the share of the upstream's request rate it keeps.
* `vs_nginx`, `vs_litellm`, ...: throughput, p50/p99 latency and peak RSS as ratios
  (this target / that reference; > 1 means more requests, slower answers or more memory).
* `vs_bananagate`, for a variant (`bananagate-NAME`): the same ratios against the default
  bananagate, e.g. `--variant w2:BANANAGATE_WORKERS=2` gives the two-worker speed-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REFERENCES = ("direct", "nginx", "litellm")
SCHEMA_VERSION = 1


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def add_ratios(measurements: list[dict[str, Any]]) -> None:
    """Fill each measurement's `ratios` and `added_latency_ms` from its cell's references."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for m in measurements:
        if m.get("load"):
            cells.setdefault((m["workload"], m["concurrency"]), {})[m["target"]] = m
    for m in measurements:
        load = m.get("load")
        if not load:
            continue
        cell = cells[(m["workload"], m["concurrency"])]
        ratios: dict[str, dict[str, float | None]] = {}
        references = REFERENCES + (("bananagate",) if m["target"].startswith("bananagate-") else ())
        for ref_name in references:
            ref = cell.get(ref_name)
            if ref is None or ref is m:
                continue
            ref_load = ref["load"]
            ratios[f"vs_{ref_name}"] = {
                "throughput": _ratio(load["throughput_rps"], ref_load["throughput_rps"]),
                "p50": _ratio(load["latency_ms"]["p50"], ref_load["latency_ms"]["p50"]),
                "p99": _ratio(load["latency_ms"]["p99"], ref_load["latency_ms"]["p99"]),
                "peak_rss": _ratio(m.get("peak_rss_bytes"), ref.get("peak_rss_bytes")),
                "cpu_per_request": _ratio(m.get("cpu_ms_per_request"), ref.get("cpu_ms_per_request")),
            }
        m["ratios"] = ratios
        direct = cell.get("direct")
        if direct is not None and direct is not m:
            m["added_latency_ms"] = {
                q: _difference(load["latency_ms"][q], direct["load"]["latency_ms"][q]) for q in ("p50", "p99")
            }


# --- tables -------------------------------------------------------------------------------------

COLUMNS = (
    ("target", "target"),
    ("workload", "workload"),
    ("c", "c"),
    ("rps", "req/s"),
    ("mbps", "MB/s out"),
    ("p50", "p50 ms"),
    ("p99", "p99 ms"),
    ("added", "+p50 ms vs direct"),
    ("x_direct", "thr. × direct"),
    ("x_nginx", "thr. × nginx"),
    ("x_nginx_p50", "p50 × nginx"),
    ("x_litellm", "thr. × litellm"),
    ("x_bananagate", "thr. × bananagate"),
    ("cpu", "CPU ms/req"),
    ("rss", "peak RSS MB"),
    ("x_rss_nginx", "RSS × nginx"),
    ("errors", "errors"),
)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def table_rows(measurements: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for m in measurements:
        load = m.get("load")
        if not load:
            continue
        ratios = m.get("ratios", {})
        lat = load["latency_ms"]
        rss = m.get("peak_rss_bytes")
        mbps = load["bytes_read"] / load["duration_s"] / 1e6 if load["duration_s"] else None
        rows.append(
            {
                "target": m["target"],
                "workload": m["workload"],
                "c": str(m["concurrency"]),
                "rps": _fmt(load["throughput_rps"]) + ("*" if m.get("warning") else ""),
                "mbps": _fmt(mbps, 0),
                "p50": _fmt(lat["p50"]),
                "p99": _fmt(lat["p99"]),
                "added": _fmt(m.get("added_latency_ms", {}).get("p50")),
                "x_direct": _fmt(ratios.get("vs_direct", {}).get("throughput"), 2),
                "x_nginx": _fmt(ratios.get("vs_nginx", {}).get("throughput"), 2),
                "x_nginx_p50": _fmt(ratios.get("vs_nginx", {}).get("p50"), 2),
                "x_litellm": _fmt(ratios.get("vs_litellm", {}).get("throughput"), 2),
                "x_bananagate": _fmt(ratios.get("vs_bananagate", {}).get("throughput"), 2),
                "cpu": _fmt(m.get("cpu_ms_per_request"), 2),
                "rss": _fmt(rss / 1e6 if rss else None, 0),
                "x_rss_nginx": _fmt(ratios.get("vs_nginx", {}).get("peak_rss"), 1),
                "errors": str(load["errors"]),
            }
        )
    return rows


def _visible_columns(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Drop the ratio columns of references that were not measured in this run."""
    return [
        (key, title)
        for key, title in COLUMNS
        if key in ("target", "workload", "c") or any(r[key] != "–" for r in rows)
    ]


FOOTNOTE = "* fewer than 2 answers per connection completed: the throughput is undercounted"


def _footnote(measurements: list[dict[str, Any]], markdown: bool = False) -> list[str]:
    if not any(m.get("warning") for m in measurements):
        return []
    return ["\\" + FOOTNOTE if markdown else FOOTNOTE]


def text_table(measurements: list[dict[str, Any]]) -> str:
    rows = table_rows(measurements)
    if not rows:
        return "(no measurements)"
    columns = _visible_columns(rows)
    widths = {key: max(len(title), *(len(r[key]) for r in rows)) for key, title in columns}
    lines = [
        "  ".join(
            title.rjust(widths[key]) if key not in ("target", "workload") else title.ljust(widths[key])
            for key, title in columns
        )
    ]
    previous = None
    for r in rows:
        group = (r["workload"], r["c"])
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        lines.append(
            "  ".join(
                r[key].ljust(widths[key]) if key in ("target", "workload") else r[key].rjust(widths[key])
                for key, _ in columns
            )
        )
    return "\n".join([*lines, *_footnote(measurements)])


def markdown_table(measurements: list[dict[str, Any]]) -> str:
    rows = table_rows(measurements)
    if not rows:
        return ""
    columns = _visible_columns(rows)
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" if key in ("target", "workload") else "---:" for key, _ in columns) + "|"
    body = [
        "| " + " | ".join(f"`{r[key]}`" if key == "target" else r[key] for key, _ in columns) + " |"
        for r in rows
    ]
    notes = ["", *_footnote(measurements, markdown=True)] if _footnote(measurements) else []
    return "\n".join([head, rule, *body, *notes])


def summary_table(measurements: list[dict[str, Any]], gateway: str = "bananagate") -> str:
    """One Markdown row per (workload, concurrency): every target's requests per second, then the
    gateway's latency, added latency, ratios against nginx and peak RSS."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    targets: list[str] = []
    for m in measurements:
        if not m.get("load"):
            continue
        cells.setdefault((m["workload"], m["concurrency"]), {})[m["target"]] = m
        if m["target"] not in targets:
            targets.append(m["target"])
    if not cells:
        return ""
    head = ["workload", "c", *(f"{t} req/s" for t in targets)]
    head += [
        f"{gateway} p50 / p99 ms",
        "+p50 ms vs direct",
        "thr. × nginx",
        "p50 × nginx",
        "peak RSS MB (held at start)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for (workload, concurrency), cell in cells.items():
        row = [workload, str(concurrency)]
        for t in targets:
            other = cell.get(t)
            if other is None:
                row.append("–")
            else:
                row.append(_fmt(other["load"]["throughput_rps"]) + ("*" if other.get("warning") else ""))
        g = cell.get(gateway)
        if g is None:
            row += ["–"] * 5
        else:
            lat = g["load"]["latency_ms"]
            vs_nginx = g.get("ratios", {}).get("vs_nginx", {})
            rss = g.get("peak_rss_bytes")
            before = g.get("rss_before_bytes")
            row += [
                f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])}",
                _fmt(g.get("added_latency_ms", {}).get("p50")),
                _fmt(vs_nginx.get("throughput"), 2),
                _fmt(vs_nginx.get("p50"), 1),
                f"{_fmt(rss / 1e6 if rss else None, 0)} ({_fmt(before / 1e6 if before else None, 0)})",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(
        [*lines, *(["", *_footnote(measurements, markdown=True)] if _footnote(measurements) else [])]
    )


# --- files --------------------------------------------------------------------------------------


def write_results(results: dict[str, Any], path: Path) -> Path:
    """Write atomically (a `.tmp` beside it, then rename): a crashed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
