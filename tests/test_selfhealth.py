"""The daemon's own alerts: one page per cause, messages that say what is wrong and when it cleared."""

from __future__ import annotations

from blockradar.alerting.notifiers.base import Notification
from blockradar.alerting.notifiers.email import render_text
from blockradar.alerting.notifiers.slack import build_payload
from blockradar.alerting.selfhealth import SelfHealth
from blockradar.connectors.base import ConnectorHealth, LinkState

T0 = 1_700_000_000.0


def health(state: LinkState, error: str | None = None) -> ConnectorHealth:
    h = ConnectorHealth(name="pbx1", pbx="asterisk")
    h.set_state(state, T0, error)
    return h


def test_a_wrong_password_pages_once_not_twice():
    sent: list[Notification] = []
    downs, ups = [], []
    watcher = SelfHealth(link_down_after=60, auth_failing_after=0, emit=sent.append, on_down=downs.append,
                         on_up=ups.append)
    refused = health(LinkState.AUTH_FAILED, "AMI login refused")
    for k in range(0, 600, 5):  # ten minutes of refused logins, between them CONNECTING / AUTHENTICATING
        refused.state = (LinkState.AUTH_FAILED, LinkState.CONNECTING, LinkState.AUTHENTICATING)[k % 3]
        watcher.observe([refused], T0 + k)
    assert [(n.alerts[0]["labels"]["alertname"], n.status) for n in sent] == [("pbx-auth-failing", "firing")]
    assert downs == ["pbx1"]
    refused.set_state(LinkState.CONNECTED, T0 + 600)
    watcher.observe([refused], T0 + 600)
    assert [(n.alerts[0]["labels"]["alertname"], n.status) for n in sent] == [
        ("pbx-auth-failing", "firing"), ("pbx-auth-failing", "resolved")]
    assert ups == ["pbx1"]


def test_a_link_down_pages_after_its_delay_and_its_message_fits_the_kind():
    sent: list[Notification] = []
    watcher = SelfHealth(link_down_after=60, auth_failing_after=0, emit=sent.append)
    down = health(LinkState.BACKING_OFF, "connect to tcp://127.0.0.1:5038 failed: ConnectionRefusedError")
    watcher.observe([down], T0)
    watcher.observe([down], T0 + 59)
    assert sent == []
    watcher.observe([down], T0 + 60)
    (firing,) = sent
    assert firing.title() == "CRITICAL PBX link down: pbx1"
    alert = firing.alerts[0]
    assert alert["kind"] == "self" and "ConnectionRefusedError" in alert["detail"]
    text = render_text(firing)
    for misleading in ("Matching / attempts", "Window", "Trunk", "0 / 0"):
        assert misleading not in text  # a self-alert has no calls, windows or trunks to show
    slack = str(build_payload(firing))
    assert "Matching" not in slack and "ConnectionRefusedError" in slack
    down.set_state(LinkState.CONNECTED, T0 + 130)
    watcher.observe([down], T0 + 130)
    resolved = sent[-1]
    assert resolved.title() == "RESOLVED PBX link down: pbx1"
    assert resolved.alerts[0]["detail"] == "connector pbx1 is connected again, after 2m10s"
    assert resolved.alerts[0]["what_to_do"] == {}


def test_health_clears_the_error_on_recovery_but_keeps_when():
    h = health(LinkState.BACKING_OFF, "no Pong within 3 s")
    assert h.last_error == "no Pong within 3 s" and h.last_error_at == T0
    h.set_state(LinkState.CONNECTED, T0 + 4)
    assert h.last_error is None and h.last_error_at == T0


def test_dropped_outcomes_page_once_and_resolve_after_a_quiet_spell():
    from blockradar.alerting.selfhealth import DROPS_QUIET_S

    sent: list[Notification] = []
    watcher = SelfHealth(link_down_after=60, auth_failing_after=0, emit=sent.append)
    link = health(LinkState.CONNECTED)
    watcher.observe([link], T0)
    assert sent == []
    for k in range(1, 30):  # a flood: drops go on for half a minute
        link.dropped = 100 * k
        watcher.observe([link], T0 + k)
    (firing,) = sent
    assert firing.title() == "CRITICAL calls dropped: blockradar cannot keep up: pbx1"
    assert "dropped 100 call outcome(s)" in firing.alerts[0]["detail"]
    watcher.observe([link], T0 + 29 + DROPS_QUIET_S - 1)
    assert len(sent) == 1  # quiet, but not for long enough yet
    watcher.observe([link], T0 + 29 + DROPS_QUIET_S)
    assert [n.status for n in sent] == ["firing", "resolved"]
    assert "no call dropped for 5m" in sent[1].alerts[0]["detail"]


def test_a_store_that_cannot_be_written_pages_once_and_resolves_on_the_first_good_write():
    sent: list[Notification] = []
    watcher = SelfHealth(link_down_after=60, auth_failing_after=0, emit=sent.append)
    for k in range(5):
        watcher.store_failing("/var/lib/blockradar/state.db", "database or disk is full", T0 + k)
    watcher.store_ok("/var/lib/blockradar/state.db", T0 + 70)
    labels = {"alertname": "store-failing", "store": "/var/lib/blockradar/state.db"}
    assert [(n.alerts[0]["labels"], n.status) for n in sent] == [(labels, "firing"), (labels, "resolved")]
    assert sent[0].title() == "CRITICAL blockradar cannot write its store: /var/lib/blockradar/state.db"
    assert "after 1m10s" in sent[1].alerts[0]["detail"]
