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


async def test_both_connectors_try_a_silent_port_at_least_every_second():
    """A PBX that is not listening (its port refuses): the connectors' own schedules, as they ran."""
    import asyncio
    import socket

    from blockradar.connectors.asterisk import AsteriskConfig, AsteriskConnector
    from blockradar.connectors.freeswitch import FreeswitchConfig, FreeswitchConnector
    from blockradar.secret import Secret

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    ami = AsteriskConnector(AsteriskConfig(name="pbx1", host="127.0.0.1", port=port, username="u",
                                           secret=Secret("s")), lambda o: None)
    esl = FreeswitchConnector(FreeswitchConfig(name="fs1", host="127.0.0.1", port=port, password=Secret("p")),
                              lambda o: None)
    await ami.start()
    await esl.start()
    try:
        await asyncio.sleep(3.0)
    finally:
        await ami.close()
        await esl.close()
    for health in (ami.health(), esl.health()):
        assert health.extra["redials"] >= 3, health.extra  # a few seconds away: several attempts
        assert 0 < health.extra["redial_longest_s"] <= 1.0  # never a wait above a second
