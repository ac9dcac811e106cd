"""The reconnect schedule every connector uses: at least every second while the PBX is away, the
first retry quickly, never in lockstep, auth failures slower unless told to retry now."""

from __future__ import annotations

import random

import pytest

from blockradar.connectors.base import RedialSchedule


@pytest.mark.parametrize("seed", range(20))
def test_a_down_pbx_is_probed_at_least_every_second(seed):
    schedule = RedialSchedule(rng=random.Random(seed))  # the defaults every connector ships with
    delays = [schedule.next_delay() for _ in range(200)]
    assert max(delays) <= 1.0  # 600 s of a dead PBX: never a gap above a second (30 s before)
    assert 0.1875 <= delays[0] <= 0.25  # the first retry comes fast: a restart takes about a second
    assert sum(delays) / len(delays) > 0.7  # but it does not hammer the PBX either
    assert len(set(delays)) > 150  # jittered: daemons beside many PBXes do not retry in lockstep


def test_a_link_that_was_up_starts_again_from_the_shortest_delay():
    schedule = RedialSchedule(rng=random.Random(1))
    for _ in range(10):
        schedule.next_delay()
    schedule.reset()
    assert schedule.next_delay() <= 0.25


def test_auth_failures_wait_their_own_interval_and_reset_the_schedule():
    schedule = RedialSchedule(auth_retry=30.0, rng=random.Random(2))
    for _ in range(5):
        schedule.next_delay()
    assert schedule.auth_delay() == 30.0
    assert schedule.next_delay() <= 0.25


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        RedialSchedule(initial=2.0, ceiling=1.0)
