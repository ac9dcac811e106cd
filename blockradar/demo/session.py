"""``blockradar demo``: the whole daemon against two emulated PBXes, in well under a minute.

Loopback AMI and ESL servers (``blockradar.testing``, broadcasting whatever they are given) stream
calls rebuilt from real recordings (``traffic.py``); the real Asterisk and FreeSWITCH connectors
connect to them over TCP; the real daemon (default rules, a demo threshold set with short windows,
the console notifier, plus any notifiers of ``--config``) classifies, counts and alerts. One calling
number gets blocked by the carrier (608 and 603+ with redress), then stops dialling, and its alert
resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from blockradar.alerting.lifecycle import Alert
from blockradar.alerting.notifiers.base import AlertDict
from blockradar.classification import Classification
from blockradar.config import load_config
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.outcome import CallOutcome
from blockradar.testing.ami import AmiServer
from blockradar.testing.esl import EslServer, EslSession

BLOCKED_NUMBER = "+15557650003"

def demo_thresholds(duration_s: float) -> list[dict[str, Any]]:
    """The demo's thresholds: the shipped defaults' shapes with windows scaled to the demo's length,
    so the blocked number's alerts both fire and resolve while you watch."""
    window = f"{max(5, round(duration_s * 0.6))}s"
    return [
        {"name": "demo-strong-block", "scope": ["caller_number"], "categories": ["analytics_block"],
         "confidence": ["high"], "window": window, "count": 1, "severity": "warning",
         "description": "Any conformant 603+ or 608 on a number."},
        {"name": "demo-repeated-blocks", "scope": ["caller_number"], "categories": ["analytics_block"],
         "window": window, "count": 3, "severity": "critical",
         "description": "Three analytics blocks on one number within the window."},
        {"name": "demo-trunk-block-rate", "scope": ["trunk"], "categories": ["analytics_block"],
         "window": window, "rate": 0.5, "min_attempts": 4, "severity": "critical",
         "description": "Half of a trunk's attempts blocked: a carrier-wide event."},
    ]


# (seconds from start, pbx, scenario, caller, trunk)
Plan = list[tuple[float, str, str, str, str]]


def demo_plan(duration_s: float) -> Plan:
    """The call schedule: two healthy numbers all along; one number blocked in the first half."""
    healthy = ["200", "486", "200", "480", "603", "200", "noanswer", "200", "607", "200"]
    plan: Plan = []
    steps = int(duration_s / 0.5)
    for i in range(steps):
        t = i * 0.5
        plan.append((t, "asterisk", healthy[i % len(healthy)], "+15557650001", "carrier-a"))
        if i % 2 == 0:
            plan.append((t + 0.25, "freeswitch", healthy[(i // 2 + 3) % len(healthy)], "+15557650002", "carrier-b"))
        if t < duration_s * 0.45 and i % 2 == 1:
            # the campaign number: blocked by the carrier (608 via Asterisk, 603+ via FreeSWITCH),
            # with the odd call still getting through
            n = i // 2
            pbx = "freeswitch" if n % 2 else "asterisk"
            scenario = "200" if n % 3 == 2 else ("603plus" if pbx == "freeswitch" else "608")
            plan.append((t + 0.1, pbx, scenario, BLOCKED_NUMBER, "carrier-c"))
    return sorted(plan)


@dataclass
class DemoStats:
    outcomes: list[tuple[CallOutcome, Classification]] = field(default_factory=list)
    transitions: list[AlertDict] = field(default_factory=list)
    notifications: int = 0  # group notifications the daemon emitted (each banner on the console is one)

    def by_number(self) -> list[list[Any]]:
        rows: dict[tuple[str, str], Counter[str]] = {}
        for outcome, cls in self.outcomes:
            key = (outcome.caller_number or "?", outcome.trunk or "?")
            counter = rows.setdefault(key, Counter())
            counter["attempts"] += 1
            counter[cls.category] += 1
        table = []
        for (number, trunk), c in sorted(rows.items(), key=lambda kv: -kv[1]["analytics_block"]):
            blocked = c["analytics_block"]
            table.append([number, trunk, c["attempts"], c["answered"], blocked, c["unwanted"],
                          f"{blocked / c['attempts']:.0%}"])
        return table


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    from blockradar.cli.common import table

    return table(headers, rows)


class DemoSession:
    def __init__(self, *, duration_s: float = 20.0, user_config: str | None = None, out: TextIO = sys.stdout,
                 live: bool = True, as_json: bool = False, store_path: str | None = None,
                 listen: str = "127.0.0.1:0", serve: bool = False) -> None:
        self.duration_s = duration_s
        self.listen = listen  # the daemon's HTTP: /metrics, /healthz and the status page
        self.serve = serve  # after the traffic, keep the status page up until Ctrl-C
        self.store_path = store_path
        self.user_config = user_config
        self.out = out
        self.live = live
        self.as_json = as_json
        self.stats = DemoStats()

    def _say(self, text: str) -> None:
        if not self.as_json:
            self.out.write(text + "\n")
            self.out.flush()

    def _write_config(self, workdir: Path, ami: AmiServer, esl: EslServer, ami_secret: str,
                      esl_password: str) -> Path:
        notifiers: list[dict[str, Any]] = [{"type": "console", "name": "console",
                                           "stream": "stderr" if self.as_json else "stdout"}]
        rules: list[str] = ["default"]
        if self.user_config:
            user = load_config(self.user_config).document.data or {}
            notifiers += [n for n in user.get("notifiers", []) if n.get("type") != "console"]
            rules = list(user.get("rules", rules))
        config = {
            "connectors": [
                {"name": "demo-asterisk", "type": "asterisk", "host": "127.0.0.1", "port": ami.port,
                 "username": "blockradar", "secret": "${DEMO_AMI_SECRET}", "ping_interval": "2s"},
                {"name": "demo-freeswitch", "type": "freeswitch", "host": "127.0.0.1", "port": esl.port,
                 "password": "${DEMO_ESL_PASSWORD}", "heartbeat_timeout": "30s"},
            ],
            "rules": rules,
            "thresholds": demo_thresholds(self.duration_s),
            "alerting": {"group_by": ["threshold"], "group_wait": "2s", "group_interval": "4s",
                         "repeat_interval": "1h", "send_resolved": True},
            "notifiers": notifiers,
            "store": str(Path(self.store_path).resolve()) if self.store_path else str(workdir / "demo.db"),
            "http": {"listen": self.listen},
            "self_health": {"link_down_after": "10s"},
        }
        path = workdir / "demo.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    async def run(self) -> dict[str, Any]:
        from blockradar.daemon import Daemon

        started = time.monotonic()
        ami_secret, esl_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        # PBXes that broadcast what they are given (push) to every logged-in / subscribed client
        ami = AmiServer(username="blockradar", secret=ami_secret)
        esl = EslServer(password=esl_password, default=EslSession(heartbeat_every=5.0))
        await ami.start()
        esl.start()
        builder = TrafficBuilder()
        with tempfile.TemporaryDirectory(prefix="blockradar-demo-") as tmp:
            path = self._write_config(Path(tmp), ami, esl, ami_secret, esl_password)
            env = {"DEMO_AMI_SECRET": ami_secret, "DEMO_ESL_PASSWORD": esl_password}
            import os

            loaded = load_config(path, env={**os.environ, **env})
            daemon = Daemon(loaded, on_outcome=lambda o, c: self.stats.outcomes.append((o, c)),
                            on_transition=lambda a, s: self._on_transition(a, s))
            await daemon.start()
            http_port = daemon.http.bound_port if daemon.http else "-"
            host = self.listen.rpartition(":")[0] or "127.0.0.1"
            page = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{http_port}/"
            self.status_url = page
            if self.as_json:  # JSON lines: this one first, the summary last
                self.out.write(json.dumps({"kind": "demo-start", "status_page": page}) + "\n")
                self.out.flush()
            self._say(f"blockradar demo: emulated Asterisk AMI on 127.0.0.1:{ami.port} and FreeSWITCH ESL on "
                      f"127.0.0.1:{esl.port}\nstatus page: {page}  (numbers' cards at {page}numbers/<E.164>; "
                      f"/metrics and /healthz beside it)")
            await self._wait_connected(daemon)
            self._say(f"connected: {', '.join(h.name + '=' + str(h.state) for h in daemon.healths())}; "
                      f"streaming {self.duration_s:.0f} s of calls rebuilt from real recordings ...\n")
            await self._stream(builder, ami, esl, daemon)
            # let the last alerts group, then the blocked number's window empty and its alert resolve
            await self._wait_settled(daemon)
            _, report = daemon.health_report()
            if self.serve:
                self._say(f"\nthe status page stays up at {page} ; Ctrl-C to stop")
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
            await daemon.stop(flush_s=5)
        await ami.close()
        await asyncio.to_thread(esl.stop)
        summary = self._summary(time.monotonic() - started, report)
        if self.as_json:
            self.out.write(json.dumps(summary) + "\n")
        return summary

    def _on_transition(self, alert: Alert, snapshot: AlertDict) -> None:
        self.stats.transitions.append(snapshot)

    async def _wait_connected(self, daemon: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok, _ = daemon.health_report()
            if ok:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the connectors did not connect to the emulators")

    async def _stream(self, builder: TrafficBuilder, ami: AmiServer, esl: EslServer, daemon: Any) -> None:
        plan = demo_plan(self.duration_s)
        start = time.monotonic()
        next_table = start + 4.0
        for offset, pbx, scenario, caller, trunk in plan:
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            callee = f"+1555888{int(offset * 10) % 10000:04d}"
            if pbx == "asterisk":
                spec = CallSpec(scenario, caller, callee, trunk, time.time())
                await ami.push(b"".join(builder.ami_frames(spec)))
            else:
                spec = CallSpec(scenario, caller, callee, trunk, time.time() - builder.span_s("esl", scenario))
                esl.push([builder.esl_frame(body) for body in builder.esl_bodies(spec)])
            if self.live and time.monotonic() >= next_table:
                next_table += 4.0
                self.stats.notifications = daemon.pipeline.lifecycle.notifications if daemon.pipeline else 0
                self._live_table(time.monotonic() - start)

    async def _wait_settled(self, daemon: Any, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        await asyncio.sleep(3.0)
        while time.monotonic() < deadline:
            firing = [a for a in self._alert_states().values() if a == "firing"]
            if not firing and daemon.outbox.depth() == 0:
                return
            await asyncio.sleep(0.5)

    def _alert_states(self) -> dict[tuple[str, str], str]:
        states: dict[tuple[str, str], str] = {}
        for snap in self.stats.transitions:
            key = (str(snap.get("threshold")), json.dumps(snap.get("scope", {}), sort_keys=True))
            states[key] = str(snap.get("state"))
        return states

    def _live_table(self, elapsed: float) -> None:
        firing = sum(1 for s in self._alert_states().values() if s == "firing")
        # alerts are grouped per threshold: one notification (one banner above) can carry several of them
        self._say(f"--- {elapsed:4.0f} s: {len(self.stats.outcomes)} calls, {firing} alert(s) firing, "
                  f"{self.stats.notifications} notification(s) sent")
        self._say(_table(["number", "trunk", "attempts", "answered", "blocked", "unwanted", "block rate"],
                         self.stats.by_number()))
        self._say("")

    def _summary(self, elapsed: float, report: dict[str, Any]) -> dict[str, Any]:
        categories = Counter(cls.category for _, cls in self.stats.outcomes)
        fired = [s for s in self.stats.transitions if s.get("state") == "firing"]
        resolved = [s for s in self.stats.transitions if s.get("state") == "resolved"]
        redress = sorted({r.get("url") for s in fired for r in s.get("redress", []) if r.get("url")})
        summary = {
            "kind": "demo-summary",
            "seconds": round(elapsed, 1),
            "calls": len(self.stats.outcomes),
            "categories": dict(categories.most_common()),
            "alerts_fired": [{"threshold": s.get("threshold"), "scope": s.get("scope")} for s in fired],
            "alerts_resolved": [{"threshold": s.get("threshold"), "scope": s.get("scope")} for s in resolved],
            "redress": redress,
            "connectors": {c["name"]: c["state"] for c in report.get("connectors", [])},
        }
        if not self.as_json:
            self._say("=== demo summary " + "=" * 60)
            self._say(_table(["number", "trunk", "attempts", "answered", "blocked", "unwanted", "block rate"],
                             self.stats.by_number()))
            self._say("")
            self._say(_table(["category", "calls"], [[k, v] for k, v in categories.most_common()]))
            self._say("")
            self._say(_table(["alert", "state", "scope"],
                             [[s.get("threshold"), s.get("state"), _scope(s)] for s in self.stats.transitions]))
            if redress:
                self._say(f"\nredress contacts from the carriers' 603+/608 responses: {', '.join(redress)}")
            self._say(f"\n{len(self.stats.outcomes)} calls classified, {len(fired)} alert(s) fired, "
                      f"{len(resolved)} resolved, in {elapsed:.1f} s. Next: `blockradar run --config "
                      "examples/blockradar.yaml` beside your PBX.")
        return summary


def _scope(snapshot: AlertDict) -> str:
    return ", ".join(f"{k}={v}" for k, v in snapshot.get("scope", {}).items())


def run_demo(**kwargs: Any) -> dict[str, Any]:
    return asyncio.run(DemoSession(**kwargs).run())
