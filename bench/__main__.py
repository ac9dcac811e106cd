"""``python -m bench [--quick] [--json-only]``: every figure of issue 7, side by side with its baseline.

Progress goes to stderr; stdout gets the table (unless ``--json-only``) and, as its last line, one
JSON object with every figure, the environment and the PASS/FAIL of each target. The exit status
is 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import ami, engine, esl, fleet, hep, latency, load, memory
from bench.report import environment, json_line, judge, median, table
from bench.streams import ami_stream, esl_stream


@dataclass(frozen=True, slots=True)
class Sizes:
    repeats: int
    ami_calls: int
    esl_calls: int
    engine_steady: int
    memory_total: int
    memory_numbers: int
    latency_s: float
    burst_events: int = load.BURST_EVENTS
    flood_numbers: int = load.FLOOD_NUMBERS
    tick_alerts: int = engine.TICK_ALERTS
    tick_seconds: int = engine.TICK_SECONDS
    fleet_calls: int = fleet.CALLS
    fleet_memory_numbers: int = fleet.MEMORY_NUMBERS


# --quick keeps the full memory figure (100k -> 1M, ~20 s: a scaled-down one hides the growth) and
# the engine's length (live alerts accumulate with it, so a shorter run would flatter the rate); it
# has smaller streams and fewer repetitions. The fleet's Redis memory is 100k numbers in both.
QUICK = Sizes(repeats=3, ami_calls=1000, esl_calls=1200, engine_steady=300_000, memory_total=1_000_000,
              memory_numbers=100_000, latency_s=4.0, fleet_calls=20_000)
FULL = Sizes(repeats=5, ami_calls=4000, esl_calls=4000, engine_steady=300_000, memory_total=1_000_000,
             memory_numbers=100_000, latency_s=20.0, fleet_calls=50_000)


def progress(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median of the per-repetition ratios (each pair ran back to back, under the same noise)."""
    return median([a / b for a, b in zip(ours, theirs, strict=True) if b > 0])


def fleet_figures(fleets: dict[str, Any]) -> dict[str, Any]:
    """The JSON keys of ``fleet.measure``'s answer; only ``fleet_skipped`` (the reason) when it was skipped."""
    if "skipped" in fleets:
        return {"fleet_skipped": fleets["skipped"]}
    one, many = fleets["memory"]["one"], fleets["memory"]["many"]
    return {
        "fleet_skipped": None,
        "fleet_outcomes_per_s": median(fleets["fleet"]),
        "fleet_alone_outcomes_per_s": median(fleets["alone"]),
        "fleet_cost_vs_alone": paired_ratio(fleets["alone"], fleets["fleet"]),
        "fleet_daemon_cpu_us_per_outcome": median(fleets["daemon_cpu_us"]),
        "fleet_redis_cpu_us_per_outcome": median(fleets["redis_cpu_us"]),
        "fleet_calls": fleets["calls"],
        "fleet_redis_mb_live_numbers": one["bytes"] / 1e6,
        "fleet_bytes_per_number": one["bytes_per_number"],
        "fleet_memory_numbers": one["numbers"],
        "fleet_bytes_per_call": many["bytes_per_call"],
        "fleet_bytes_per_number_10_calls": many["bytes_per_number"],
        "fleet_stream_bytes_per_entry": one["stream_per_call"],
        "fleet_seen_key_bytes": one["seen_key"],
        "fleet_entry_json_bytes": one["payload"],
        "fleet_redis_version": fleets["redis_version"],
    }


def run(sizes: Sizes, quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"quick": quick, "repeats": sizes.repeats}
    started = time.monotonic()

    progress(f"building the AMI stream ({sizes.ami_calls} calls)")
    stream = ami_stream(sizes.ami_calls)
    rates = ami.measure(stream, sizes.repeats, progress)
    result.update(
        ami_events_per_s=median(rates["blockradar"]),
        panoramisk_events_per_s=median(rates["panoramisk"]),
        ami_vs_panoramisk=paired_ratio(rates["blockradar"], rates["panoramisk"]),
        ami_events=stream.events,
        ami_events_per_call=stream.events / stream.calls,
        ami_bytes_per_event=len(stream.data) / stream.events,
    )
    del stream

    progress(f"HEP: the lab's datagrams of {sizes.ami_calls} calls through the reader and the join")
    heps = hep.measure(sizes.ami_calls, sizes.repeats, progress)
    hep_per_call = median(heps["rates"]) / (heps["datagrams"] / heps["calls"])
    ami_per_call = result["ami_events_per_s"] / result["ami_events_per_call"]
    result.update(hep_datagrams_per_s=median(heps["rates"]), hep_calls_per_s=hep_per_call,
                  hep_cost_vs_ami=ami_per_call / hep_per_call, hep_joined=heps["joined"],
                  hep_failed_calls=heps["failed_calls"])

    progress(f"building the ESL stream ({sizes.esl_calls} calls)")
    stream = esl_stream(sizes.esl_calls)
    rates = esl.measure(stream, sizes.repeats, progress)
    result.update(
        esl_events_per_s=median(rates["blockradar"]),
        greenswitch_events_per_s=median(rates["greenswitch"]),
        esl_vs_greenswitch=paired_ratio(rates["blockradar"], rates["greenswitch"]),
        esl_events=stream.events,
        esl_bytes_per_event=len(stream.data) / stream.events,
    )
    del stream

    progress(f"engine: 100k numbers, {sizes.engine_steady:,} steady outcomes")
    eng = engine.measure(sizes.engine_steady, sizes.repeats, progress)
    result.update(
        engine_outcomes_per_s=median(eng["steady"]),
        engine_cold_outcomes_per_s=median(eng["cold"]),
        engine_tick_all_due_ms=median(eng["tick_ms"]),
        engine_alerts_live=eng["alerts_live"],
    )

    ticks = engine.measure_ticks(progress, sizes.tick_alerts, sizes.tick_seconds)
    result.update(
        tick_ms_10k_alerts=ticks["slice_max_ms"],
        tick_slice_p99_ms=ticks["slice_p99_ms"],
        tick_total_max_ms=ticks["tick_max_ms"],
        tick_alerts_live=ticks["alerts_live"],
        tick_gc_pause_max_ms=ticks["gc_pause_max_ms"],
    )
    progress(f"ticks: longest slice {ticks['slice_max_ms']:.1f} ms (p99 {ticks['slice_p99_ms']:.1f} ms), "
             f"{ticks['alerts_live']:,} live alerts")

    burst = load.measure_burst(progress, sizes.burst_events)
    result.update(loop_lag_p99_ms=burst["lag_p99_ms"], loop_lag_max_ms=burst["lag_max_ms"],
                  loop_lag_p50_ms=burst["lag_p50_ms"], burst_events=burst["events"], burst_lost=burst["lost"])
    flood = load.measure_flood(progress, sizes.flood_numbers)
    result.update(flood_numbers=sizes.flood_numbers, flood_dropped=flood["dropped"] + flood["lost"],
                  flood_held_back=flood["held_back"], flood_loop_lag_p99_ms=flood["lag_p99_ms"],
                  flood_loop_lag_max_ms=flood["lag_max_ms"], flood_seconds=flood["seconds"])

    progress(f"memory: {sizes.memory_total:,} outcomes over {sizes.memory_numbers:,} numbers (fresh process)")
    mem = memory.measure(sizes.memory_total, sizes.memory_numbers)
    result.update(
        rss_growth_100k_to_1m=mem["rss_growth"],
        bytes_per_key=mem["bytes_per_key"],
        rss_at_numbers_mb=mem["rss_at_numbers"] / 1e6,
        rss_at_total_mb=mem["rss_at_total"] / 1e6,
        memory_outcomes=mem["outcomes"],
        memory_numbers=mem["numbers"],
        memory_alerts_live=mem["alerts_live_at_total"],
    )
    progress(f"memory: growth {mem['rss_growth']:.3f}, {mem['bytes_per_key']:.0f} B/key")

    fleets = fleet.measure(sizes.fleet_calls, sizes.repeats, progress, sizes.fleet_memory_numbers)
    result.update(fleet_figures(fleets))
    if "skipped" not in fleets:
        progress(f"fleet: {result['fleet_outcomes_per_s']:,.0f} outcomes/s through two daemons "
                 f"({result['fleet_cost_vs_alone']:.1f}x one daemon alone), "
                 f"{result['fleet_bytes_per_number']:.0f} B per live number in Redis")

    lat = latency.measure(sizes.latency_s, progress)
    result.update(
        alert_latency_p99_ms=lat["p99_ms"],
        alert_latency_p50_ms=lat["p50_ms"],
        alert_latency_max_ms=lat["max_ms"],
        alert_latency_samples=lat["alerts_received"],
        alert_latency_expected=lat["alerts_expected"],
    )
    result.update(environment())
    result["targets"] = judge(result)
    result["all_pass"] = all(v == "PASS" for v in result["targets"].values())
    result["seconds"] = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 repetitions: under a minute")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    result = run(QUICK if args.quick else FULL, args.quick)
    if not args.json_only:
        print(table(result))
        print()
    print(json_line(result))
    sys.stdout.flush()
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
