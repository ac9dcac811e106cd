"""Pre-built CallOutcomes for the engine and memory figures, as the connectors produce them.

One template outcome per scenario and PBX comes from the bundled real recordings through the real
readers (``blockradar.recordings.read_recording``: the same normalizers as the live connectors).
``outcome_cycle`` turns them into a stream over a fixed set of calling numbers, with the scenario
mix of ``streams.SCENARIO_WEIGHTS``, fresh call ids and event times at ``calls_per_s`` (default ``CALLS_PER_SECOND``).
"""

from __future__ import annotations

from collections.abc import Iterator

from bench.streams import CALLS_PER_SECOND, TRUNKS, caller_number, scenario_sequence
from blockradar.demo.traffic import AMI_TEMPLATES, ESL_TEMPLATES, RECORDINGS
from blockradar.outcome import CallOutcome
from blockradar.recordings import read_recording

ENGINE_START = 1_795_000_000.0  # any fixed epoch: the engine runs on event time


def scenario_templates() -> dict[str, tuple[CallOutcome, ...]]:
    """scenario -> its outcomes (Asterisk, FreeSWITCH) read from the recordings."""
    out: dict[str, tuple[CallOutcome, ...]] = {}
    for scenario in AMI_TEMPLATES:
        found: list[CallOutcome] = []
        for path in (AMI_TEMPLATES[scenario], ESL_TEMPLATES[scenario]):
            outcomes = read_recording(RECORDINGS / path, connector="bench").outcomes
            if len(outcomes) != 1:
                raise RuntimeError(f"{path}: expected one outcome, got {len(outcomes)}")
            found.append(outcomes[0])
        out[scenario] = tuple(found)
    return out


def outcome_cycle(
    n: int,
    numbers: int,
    *,
    templates: dict[str, tuple[CallOutcome, ...]] | None = None,
    start: float = ENGINE_START,
    offset: int = 0,
    seed: int = 11,
    calls_per_s: float = CALLS_PER_SECOND,
) -> Iterator[CallOutcome]:
    """``n`` outcomes, the i-th from calling number ``(offset + i) % numbers``, ``calls_per_s`` of event time."""
    templates = templates or scenario_templates()
    mix = scenario_sequence(min(n, 100_003), seed)  # a prime-sized pattern, repeated
    for j in range(n):
        i = offset + j
        template = templates[mix[j % len(mix)]][i & 1]
        at = start + i / calls_per_s
        duration = (template.ended_at or 0.0) - (template.started_at or 0.0)
        yield template.replace(
            call_id=f"bench-{i}",
            caller_number=caller_number(i % numbers),
            trunk=TRUNKS[i % len(TRUNKS)],
            started_at=at - duration,
            ended_at=at,
        )
