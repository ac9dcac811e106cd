"""Sliding-window counters per scope key, driven by event time.

A :class:`WindowSet` serves one scope (say ``caller_number``) at one bucket size: for every key
it keeps a ring of time buckets, each holding a few integer columns (column 0 = attempts, the
others = the signals thresholds asked for), plus a running total per window length. Adding an
outcome is O(columns) and allocation-free on the hot path; memory is keys x buckets x columns,
never proportional to the number of calls.

Time and edges. Bucket ``b`` covers ``[b*B, (b+1)*B)``; a window of ``L`` buckets "at" bucket
``h`` holds buckets ``h-L+1 .. h``. So an outcome counts for between ``(L-1)*B`` and ``L*B``
seconds, the granularity of a bucket; thresholds use ``B = window / 12`` unless configured.

Out-of-order events. Every outcome older than the key's newest bucket but still inside its ring
is counted in its right bucket and in exactly the windows that still cover that bucket, so
reordering never changes the result. Outcomes older than ``late_tolerance_s`` behind the newest
event seen by the set are additionally counted in ``late`` (a health figure). Outcomes older
than the longest window relative to their key's newest bucket can no longer be in any window:
they are dropped and counted in ``too_old``.

Eviction. Keys whose newest bucket has left the longest window are evicted by ``evict_idle``
(counted in ``idle_evicted``); a hard cap (``max_keys``) evicts the least recently updated key
first (counted in ``lru_evicted``), so a flood of spoofed caller IDs cannot exhaust memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blockradar.detect.evidence import KeyEvidence

DEFAULT_MAX_KEYS = 200_000


class KeyWindow:
    """The counters of one scope key. ``totals[w*C + c]`` is column ``c`` over window ``w``."""

    __slots__ = ("evidence", "head", "ring", "totals")

    def __init__(self, head: int, ring_len: int, totals_len: int) -> None:
        self.head = head
        self.ring = [0] * ring_len
        self.totals = [0] * totals_len
        self.evidence: KeyEvidence | None = None  # owned by the pipeline: the matching calls, per bucket


class WindowSet:
    """Bucketed counters for every key of one scope at one bucket size."""

    __slots__ = (
        "_keys",
        "_lengths",
        "_ring_len",
        "_single",
        "_totals_len",
        "_zero_ring",
        "_zero_totals",
        "bucket_s",
        "columns",
        "idle_evicted",
        "late",
        "late_tolerance_s",
        "lru_evicted",
        "max_keys",
        "n_buckets",
        "too_old",
        "watermark",
        "windows_s",
    )

    def __init__(
        self,
        bucket_s: float,
        windows_s: Sequence[float],
        columns: int,
        max_keys: int = DEFAULT_MAX_KEYS,
        late_tolerance_s: float = 5.0,
    ) -> None:
        if bucket_s <= 0 or not windows_s or columns < 1 or max_keys < 1:
            raise ValueError("bucket_s > 0, at least one window, one column and one key are required")
        self.bucket_s = float(bucket_s)
        self.windows_s = tuple(float(w) for w in windows_s)
        self._lengths = tuple(max(1, math.ceil(w / self.bucket_s - 1e-9)) for w in self.windows_s)
        self.n_buckets = max(self._lengths)
        self._single = len(self._lengths) == 1
        self.columns = columns
        self.max_keys = max_keys
        self.late_tolerance_s = late_tolerance_s
        self._ring_len = self.n_buckets * columns
        self._totals_len = len(self._lengths) * columns
        self._zero_ring = [0] * self._ring_len
        self._zero_totals = [0] * self._totals_len
        self._keys: OrderedDict[Hashable, KeyWindow] = OrderedDict()
        self.watermark = -math.inf
        self.late = 0
        self.too_old = 0
        self.lru_evicted = 0
        self.idle_evicted = 0

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def get(self, key: Hashable) -> KeyWindow | None:
        return self._keys.get(key)

    def keys(self) -> Iterator[Hashable]:
        return iter(self._keys)

    def window_length_buckets(self, window_index: int) -> int:
        return self._lengths[window_index]

    def ensure(self, key: Hashable, t: float) -> KeyWindow:
        """The key's counters, created empty at ``t`` if it has none (an alert restored after a restart
        whose calls are no longer in the store still needs a window to be judged on)."""
        kw = self._keys.get(key)
        if kw is None:
            if len(self._keys) >= self.max_keys:
                self._keys.popitem(last=False)
                self.lru_evicted += 1
            kw = self._keys[key] = KeyWindow(int(t // self.bucket_s), self._ring_len, self._totals_len)
        return kw

    def counts(self, key: Hashable, window_index: int = 0, at: float | None = None) -> list[int]:
        """The columns of one window for a key (zeros when unknown), optionally advanced to ``at``."""
        kw = self._keys.get(key)
        if kw is None:
            return [0] * self.columns
        if at is not None:
            self.advance(kw, int(at // self.bucket_s))
        base = window_index * self.columns
        return kw.totals[base : base + self.columns]

    # -- writing ---------------------------------------------------------------------------
    def add(self, key: Hashable, t: float, cols: Sequence[int]) -> KeyWindow | None:
        """Count one outcome at event time ``t`` in column 0 and in ``cols``.

        Returns the key's counters, or None when the outcome was too old to be in any window.
        """
        b = int(t // self.bucket_s)
        keys = self._keys
        kw = keys.get(key)
        if t >= self.watermark:
            self.watermark = t
        elif t < self.watermark - self.late_tolerance_s:
            self.late += 1
        if kw is not None and kw.head == b and self._single:
            # the hot path: same bucket as the key's last outcome, one window length
            keys.move_to_end(key)
            ring = kw.ring
            totals = kw.totals
            base = (b % self.n_buckets) * self.columns
            ring[base] += 1
            totals[0] += 1
            for c in cols:
                ring[base + c] += 1
                totals[c] += 1
            return kw
        if kw is None:
            if len(keys) >= self.max_keys:
                keys.popitem(last=False)
                self.lru_evicted += 1
            kw = KeyWindow(b, self._ring_len, self._totals_len)
            keys[key] = kw
            age = 0
        else:
            keys.move_to_end(key)
            h = kw.head
            if b > h:
                self.advance(kw, b)
                age = 0
            else:
                age = h - b
                if age >= self.n_buckets:
                    self.too_old += 1
                    return None
        C = self.columns
        ring = kw.ring
        totals = kw.totals
        base = (b % self.n_buckets) * C
        ring[base] += 1
        for c in cols:
            ring[base + c] += 1
        wbase = 0
        for length in self._lengths:
            if age < length:
                totals[wbase] += 1
                for c in cols:
                    totals[wbase + c] += 1
            wbase += C
        return kw

    def advance(self, kw: KeyWindow, b: int) -> None:
        """Move a key's newest bucket forward to ``b``, expiring what leaves each window."""
        h = kw.head
        if b <= h:
            return
        R = self.n_buckets
        C = self.columns
        ring = kw.ring
        totals = kw.totals
        if b - h >= R:
            ring[:] = self._zero_ring
            totals[:] = self._zero_totals
            kw.head = b
            return
        # column 0 counts every outcome, so a bucket whose column 0 is 0 is all zeros: skip it
        if self._single:
            # one window spanning the whole ring: the bucket leaving it is the slot being reused
            for s in range(h + 1, b + 1):
                slot = (s % R) * C
                if ring[slot]:
                    for c in range(C):
                        v = ring[slot + c]
                        if v:
                            totals[c] -= v
                            ring[slot + c] = 0
            kw.head = b
            return
        lengths = self._lengths
        for s in range(h + 1, b + 1):
            wbase = 0
            for length in lengths:
                leaving = ((s - length) % R) * C
                if ring[leaving]:
                    for c in range(C):
                        v = ring[leaving + c]
                        if v:
                            totals[wbase + c] -= v
                wbase += C
            slot = (s % R) * C
            if ring[slot]:
                for c in range(C):
                    ring[slot + c] = 0
        kw.head = b

    def evict_idle(self, now: float, limit: int | None = None) -> int:
        """Drop keys whose newest bucket left the longest window (at most ``limit``); returns how many.

        Walks from the least recently updated key and stops at the first live one, so the cost
        is proportional to what is evicted; ``limit`` bounds it (a flood of numbers all going idle
        in the same minute is let go over several ticks).
        """
        horizon = int(now // self.bucket_s) - self.n_buckets
        keys = self._keys
        evicted = 0
        while keys and (limit is None or evicted < limit):
            key, kw = next(iter(keys.items()))
            if kw.head > horizon:
                break
            del keys[key]
            evicted += 1
        self.idle_evicted += evicted
        return evicted

    def next_change(self, kw: KeyWindow) -> float:
        """The event time at which ageing alone next changes one of the key's totals (a bucket holding
        calls leaves a window); ``inf`` when nothing it holds will (all zeros)."""
        h = kw.head
        R = self.n_buckets
        C = self.columns
        ring = kw.ring
        if self._single:
            for s in range(h + 1, h + R + 1):  # bucket s - R leaves when the head reaches s
                if ring[(s % R) * C]:
                    return s * self.bucket_s
            return math.inf
        for s in range(h + 1, h + R + 1):
            for length in self._lengths:
                if s <= h + length and ring[((s - length) % R) * C]:
                    return s * self.bucket_s
        return math.inf

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self._keys),
            "late": self.late,
            "too_old": self.too_old,
            "lru_evicted": self.lru_evicted,
            "idle_evicted": self.idle_evicted,
        }
