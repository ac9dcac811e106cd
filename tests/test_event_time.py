"""Which time a live event gets (``clock.EventTimeGuard``): the PBX's own when its clock agrees with
ours, even for events that waited in a queue (a backlog after a stall: the issue 12 lab run found every
queued call re-stamped up to 128 s late); the receive time, counted and logged once, when the clock is
off; and a clock that steps back is followed after a period of evidence."""

from __future__ import annotations

import logging

import pytest

from blockradar.clock import EventTimeGuard

pytestmark = pytest.mark.timeout(10)

T0 = 1_796_000_000.0


def test_a_backlog_keeps_its_own_times_when_the_clock_is_right():
    guard = EventTimeGuard("fs1", tolerance_s=5.0)
    for i in range(20):  # live traffic, a few ms on the wire
        assert guard.event_time(T0 + i, T0 + i + 0.004) == T0 + i
    # the daemon was stopped 128 s; FreeSWITCH queued 3,000 hangups and delivers them within a second
    resumed = T0 + 20 + 128.0
    times = [guard.event_time(T0 + 20 + i * 0.04, resumed + i * 0.0002) for i in range(3000)]
    assert times == [T0 + 20 + i * 0.04 for i in range(3000)]
    assert guard.skewed == 0 and abs(guard.offset_s) < 0.01


@pytest.mark.parametrize("off_s", [-90.0, 40.0])
def test_a_clock_that_is_off_is_replaced_by_receive_time_counted_and_logged_once(off_s, caplog):
    caplog.set_level(logging.WARNING, logger="blockradar.clock")
    guard = EventTimeGuard("pbx1", tolerance_s=5.0)
    received = [T0 + i for i in range(50)]
    assert [guard.event_time(t + off_s, t + 0.003) for t in received] == [t + 0.003 for t in received]
    assert guard.skewed == 50 and guard.last_offset_s == pytest.approx(off_s, abs=0.01)
    (record,) = caplog.records
    assert f"PBX clock is {off_s:+.1f} s off ours" in record.getMessage()


def test_a_clock_that_steps_back_is_followed_after_a_period_of_evidence():
    guard = EventTimeGuard("pbx1", tolerance_s=5.0)
    for i in range(10):
        guard.event_time(T0 + i, T0 + i)  # in step
    # NTP steps the PBX back 60 s: its events now look a minute old, every one of them
    t = T0 + 10.0
    late = []
    while t < T0 + 10 + 3 * EventTimeGuard.RELAX_S:  # followed within two periods
        late.append(guard.event_time(t - 60.0, t) == t - 60.0)
        t += 5.0
    assert all(late[:10])  # at first taken for a backlog (PBX times kept) ...
    assert not any(late[-10:])  # ... then judged a clock that is off: receive time
    assert guard.offset_s == pytest.approx(60.0)


def test_a_clock_that_steps_forward_is_caught_at_once():
    guard = EventTimeGuard("pbx1", tolerance_s=5.0)
    assert guard.event_time(T0, T0) == T0
    assert guard.event_time(T0 + 1 + 30.0, T0 + 1) == T0 + 1  # 30 s in the future: not trusted
    assert guard.skewed == 1
