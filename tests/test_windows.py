"""Sliding-window counters: edges, out-of-order event times, eviction, the key cap, bounded memory."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from blockradar.detect.windows import WindowSet

T0 = 1_700_000_040.0  # a multiple of 10 and 60


@pytest.mark.parametrize(
    ("offsets", "at", "expected"),
    [
        # window 60 s in 10 s buckets: an outcome counts while its bucket is one of the newest six
        ([0.0], 0.0, 1),
        ([0.0], 59.9, 1),
        ([0.0], 60.0, 0),  # bucket 0 left the window when bucket 6 began
        ([9.9], 60.0, 0),  # same bucket as 0.0: leaves together (granularity = one bucket)
        ([10.0], 60.0, 1),
        ([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], 50.0, 6),
        ([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], 65.0, 5),
        ([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], 115.0, 0),
        ([0.0] * 5 + [59.0] * 3, 60.0, 3),
        ([0.0], 10_000.0, 0),  # far jump: everything expires at once
    ],
)
def test_window_edges(offsets, at, expected):
    ws = WindowSet(10.0, [60.0], columns=2)
    for off in offsets:
        ws.add("k", T0 + off, (1,))
    assert ws.counts("k", 0, at=T0 + at) == [expected, expected]


def test_two_windows_share_one_ring():
    ws = WindowSet(60.0, [600.0, 3600.0], columns=2)
    for minute in range(0, 60, 5):
        ws.add("k", T0 + minute * 60, (1,) if minute % 10 == 0 else ())
    # last 10 minutes: minutes 50 and 55 -> 2 attempts, 1 matching (50); whole hour: 12 attempts, 6 matching
    assert ws.counts("k", 0) == [2, 1]
    assert ws.counts("k", 1) == [12, 6]
    assert ws.counts("k", 1, at=T0 + 3600 + 60 * 7) == [10, 5]  # minute 67: minutes 8..67 inside


def test_out_of_order_within_tolerance_counts_in_the_right_bucket():
    times = [T0 + i * 1.5 for i in range(200)]
    ordered = WindowSet(10.0, [120.0], columns=2, late_tolerance_s=5.0)
    for t in times:
        ordered.add("k", t, (1,) if int(t) % 3 == 0 else ())
    shuffled = WindowSet(10.0, [120.0], columns=2, late_tolerance_s=5.0)
    rng = random.Random(7)
    jittered = sorted(times, key=lambda t: t + rng.uniform(-4.0, 4.0))  # each event moves at most ~8 s
    assert jittered != times
    for t in jittered:
        shuffled.add("k", t, (1,) if int(t) % 3 == 0 else ())
    end = T0 + 300
    assert shuffled.counts("k", 0, at=end) == ordered.counts("k", 0, at=end)
    assert shuffled.counts("k", 0, at=end)[0] > 0
    assert shuffled.too_old == 0


def test_late_events_are_counted_and_too_old_ones_dropped():
    ws = WindowSet(10.0, [60.0], columns=1, late_tolerance_s=5.0)
    ws.add("k", T0 + 100, ())
    ws.add("k", T0 + 97, ())  # within tolerance: not late
    assert ws.late == 0
    ws.add("k", T0 + 60, ())  # 40 s behind: late, but its bucket is still in the window
    assert ws.late == 1
    assert ws.counts("k")[0] == 3
    assert ws.add("k", T0 + 10, ()) is None  # older than the window: dropped
    assert ws.too_old == 1
    assert ws.counts("k")[0] == 3


def test_idle_keys_are_evicted_after_the_longest_window():
    ws = WindowSet(10.0, [60.0], columns=1)
    ws.add("old", T0, ())
    ws.add("new", T0 + 50, ())
    assert ws.evict_idle(T0 + 55) == 0
    assert ws.evict_idle(T0 + 60) == 1
    assert "old" not in ws and "new" in ws
    assert ws.idle_evicted == 1


def test_key_cap_evicts_least_recently_updated():
    ws = WindowSet(10.0, [60.0], columns=1, max_keys=3)
    for key in ("a", "b", "c"):
        ws.add(key, T0, ())
    ws.add("a", T0 + 1, ())  # a is fresh again
    ws.add("d", T0 + 2, ())
    assert set(ws.keys()) == {"c", "a", "d"}
    assert ws.lru_evicted == 1


def _numbers(n):
    return [f"+1555{i:07d}" for i in range(n)]


_MEMORY_PROBE = """
import json
from blockradar.detect.windows import WindowSet

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

numbers = [f"+1555{i:07d}" for i in range(100_000)]
ws = WindowSet(300.0, [3600.0], columns=3, max_keys=200_000)
base = rss()
t = 1_700_000_000.0
for i in range(100_000):
    ws.add(numbers[i], t, (1,) if i % 20 == 0 else ())
    t += 0.01
after_100k = rss() - base
for i in range(100_000, 1_000_000):
    ws.add(numbers[i % 100_000], t, (1,) if i % 20 == 0 else ((2,) if i % 33 == 0 else ()))
    t += 0.01
print(json.dumps({"keys": len(ws), "after_100k": after_100k, "after_1m": rss() - base,
                  "first": ws.counts(numbers[0])[0]}))
"""


def test_million_outcomes_over_100k_numbers_memory_follows_keys_not_calls():
    # in a fresh process: memory other tests freed would be reused and hide (or fake) growth
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, timeout=100,
                         check=True)
    figures = json.loads(out.stdout)
    assert figures["keys"] == 100_000
    assert figures["after_100k"] > 10_000_000  # 100k keys really cost memory: the measurement sees them
    assert figures["after_1m"] <= 1.1 * figures["after_100k"], figures
    assert figures["first"] > 0


def test_key_cap_holds_under_a_flood_of_distinct_numbers():
    numbers = _numbers(100_000)
    ws = WindowSet(300.0, [3600.0], columns=2, max_keys=60_000)
    t = T0
    for i in range(1_000_000):
        ws.add(numbers[(i * 7919) % 100_000], t, ())
        t += 0.001
    assert len(ws) == 60_000
    assert ws.lru_evicted >= 40_000
