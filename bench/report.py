"""The benchmark's output: the machine it ran on, the targets, the table and the JSON line."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    op: str  # ">=" or "<="
    bound: float

    def passes(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def describe(self) -> str:
        return f"{self.op} {self.bound:g}"


TARGETS: tuple[Target, ...] = (
    Target("ami_vs_panoramisk", ">=", 1.5),
    Target("esl_vs_greenswitch", ">=", 1.5),
    Target("engine_outcomes_per_s", ">=", 200_000),
    Target("rss_growth_100k_to_1m", "<=", 1.1),
    Target("alert_latency_p99_ms", "<=", 100),
    Target("loop_lag_p99_ms", "<=", 10),
    Target("flood_loop_lag_p99_ms", "<=", 10),
    Target("flood_dropped", "<=", 0),
    Target("tick_ms_10k_alerts", "<=", 20),
)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{os.cpu_count()}"


def commit() -> str:
    """The checkout's commit, ``+dirty`` when blockradar/ or bench/ differ from it; read-only git."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--", "blockradar", "bench").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "commit": commit(),
        "platform": platform.platform(terse=True),
    }


def judge(result: dict[str, Any]) -> dict[str, str]:
    """``{target key: "PASS" | "FAIL"}``."""
    return {t.key: "PASS" if t.passes(result.get(t.key)) else "FAIL" for t in TARGETS}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float):
        if abs(value) >= 1000:
            text = f"{value:,.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}"
        else:
            text = f"{value:.2f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return text + unit


def fleet_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The fleet's rows (issue 16): information, no target; "skipped: ..." without a redis-server."""
    throughput = "fleet outcomes/s (2 daemons, 1 Redis, 1 process)"
    numbers = f"Redis for {result.get('fleet_memory_numbers') or 100_000:,} live numbers (1 call each)"
    per_call = "Redis per call (10 calls per number)"
    skipped = result.get("fleet_skipped")
    if skipped:
        return [(name, skipped, "", "", "(info)", "") for name in (throughput, numbers, per_call)]
    return [
        (throughput, _fmt(result.get("fleet_outcomes_per_s")),
         "alone " + _fmt(result.get("fleet_alone_outcomes_per_s")),
         _fmt(result.get("fleet_cost_vs_alone"), "x the cost"), "(info, floor 2x)", ""),
        (numbers, _fmt((result.get("fleet_redis_mb_live_numbers")), " MB"),
         "stream " + _fmt(result.get("fleet_stream_bytes_per_entry"), " B/entry") + " + seen key",
         _fmt(result.get("fleet_bytes_per_number"), " B/number"), "(info)", ""),
        (per_call, _fmt(result.get("fleet_bytes_per_call"), " B/call"),
         _fmt(result.get("fleet_bytes_per_number_10_calls"), " B/number"),
         _fmt(result.get("fleet_bytes_per_call"), " B/call"), "(info)", ""),
    ]


def table(result: dict[str, Any]) -> str:
    """The human table: each figure next to its baseline, the target and PASS/FAIL."""
    verdict = result.get("targets", {})
    rows: list[tuple[str, str, str, str, str, str]] = [
        ("figure", "blockradar", "baseline", "value", "target", "result"),
        ("AMI events/s (end to end vs parse only)", _fmt(result.get("ami_events_per_s")),
         "panoramisk " + _fmt(result.get("panoramisk_events_per_s")), _fmt(result.get("ami_vs_panoramisk"), "x"),
         ">= 1.5x", verdict.get("ami_vs_panoramisk", "")),
        ("ESL events/s (end to end vs parse only)", _fmt(result.get("esl_events_per_s")),
         "greenswitch " + _fmt(result.get("greenswitch_events_per_s")),
         _fmt(result.get("esl_vs_greenswitch"), "x"), ">= 1.5x", verdict.get("esl_vs_greenswitch", "")),
        ("HEP datagrams/s (reader + join, lab datagrams)", _fmt(result.get("hep_datagrams_per_s")),
         "AMI calls/s " + _fmt((result.get("ami_events_per_s") or 0) / (result.get("ami_events_per_call") or 1)),
         _fmt(result.get("hep_cost_vs_ami"), "x AMI's cost per call"), "(info)", ""),
        ("engine outcomes/s (steady, 100k keys)", _fmt(result.get("engine_outcomes_per_s")),
         "cold " + _fmt(result.get("engine_cold_outcomes_per_s")), _fmt(result.get("engine_outcomes_per_s")),
         ">= 200,000", verdict.get("engine_outcomes_per_s", "")),
        ("tick slice, 10k live alerts (longest)", _fmt(result.get("tick_ms_10k_alerts"), " ms"),
         _fmt(result.get("tick_alerts_live")) + " alerts, p99 " + _fmt(result.get("tick_slice_p99_ms"), " ms"),
         _fmt(result.get("tick_ms_10k_alerts"), " ms"), "<= 20 ms", verdict.get("tick_ms_10k_alerts", "")),
        ("loop lag p99, 10k-event ESL burst", _fmt(result.get("loop_lag_p99_ms"), " ms"),
         "max " + _fmt(result.get("loop_lag_max_ms"), " ms"), _fmt(result.get("loop_lag_p99_ms"), " ms"),
         "<= 10 ms", verdict.get("loop_lag_p99_ms", "")),
        (f"loop lag p99, {result.get('flood_numbers', 0):,}-number flood", _fmt(result.get("flood_loop_lag_p99_ms"),
                                                                                " ms"),
         "max " + _fmt(result.get("flood_loop_lag_max_ms"), " ms"), _fmt(result.get("flood_loop_lag_p99_ms"), " ms"),
         "<= 10 ms", verdict.get("flood_loop_lag_p99_ms", "")),
        ("flood: outcomes dropped or lost", _fmt(result.get("flood_dropped")),
         "held back " + _fmt(result.get("flood_held_back")) + "x", _fmt(result.get("flood_dropped")), "0",
         verdict.get("flood_dropped", "")),
        (f"RSS {result.get('memory_outcomes', 0):,} / {result.get('memory_numbers', 0):,} outcomes",
         _fmt(result.get("rss_at_total_mb"), " MB"), _fmt(result.get("rss_at_numbers_mb"), " MB"),
         _fmt(result.get("rss_growth_100k_to_1m"), "x"), "<= 1.1x", verdict.get("rss_growth_100k_to_1m", "")),
        ("bytes per live scope key", _fmt(result.get("bytes_per_key"), " B"), "", "", "(info)", ""),
        *fleet_rows(result),
        ("alert latency p99 (200 calls/s, group_wait 0)", _fmt(result.get("alert_latency_p99_ms"), " ms"),
         "p50 " + _fmt(result.get("alert_latency_p50_ms"), " ms"), _fmt(result.get("alert_latency_p99_ms"), " ms"),
         "<= 100 ms", verdict.get("alert_latency_p99_ms", "")),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    env = f"python {result.get('python')} on {result.get('cpu')}, commit {result.get('commit')}"
    mode = "quick" if result.get("quick") else "full"
    return "\n".join(lines) + f"\n\n{mode} run, medians of {result.get('repeats')} repetitions; {env}"


def json_line(result: dict[str, Any]) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 4)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(result), sort_keys=False, separators=(",", ":"))
