"""The Asterisk connector: keeps one AMI session alive and turns its events into CallOutcomes.

Owns the AMI transport: connect (plain or TLS), Login, waiting for ``FullyBooted``, liveness
(a Ping every ``ping_interval`` with a ``ping_timeout`` deadline, so a hung PBX is found within a few
seconds; a Pong late behind a burst of events does not count as missing while bytes keep
arriving; a hung PBX keeps its session, UNRESPONSIVE, so the events it queued arrive when it resumes;
after ``hung_timeout`` a second connection asks whether the PBX greets anyone: only if it does is the
silent session given up), reconnect at least every second while the PBX is away (``RedialSchedule``), and the
health snapshot.
panoramisk (pinned 1.4) does the action side: ``Action`` objects, ActionIDs, matching responses
to futures. Its reconnect loop, pinger, event dispatch and per-chunk decoding are NOT used; they
carry the defects listed in shared/reference/panoramisk-greenswitch-study.md §2.3a:

* P-1 a raising callback kills the connection -> outcomes go to the sink inside try/except;
* P-3 silent auth-failure loop -> ``LinkState.AUTH_FAILED``, logged once, retried every ``auth_backoff``
  (default 30 s) or at once on ``retry_now()`` (SIGHUP);
* P-4 Pong never checked -> our own Ping with a deadline; no Pong -> abort and reconnect;
* P-5 fixed reconnect delay, ``close()`` does not stop it -> our supervisor task owns retries;
* P-6 UTF-8 split across reads -> bytes go through ``ami_wire`` (frame first, then decode);
* unbounded partial frame -> ``ami_wire.AmiFramer`` bounds it.

Events go through the same ``ami_calls.AmiEventPipeline`` as ``blockradar replay``.
``record_ami`` saves a live stream byte-exact, in the format of the fixture ``.ami`` files.

The secret is revealed in exactly two places, the Login actions written to the socket; it is
never logged, and panoramisk's own loggers never see it (its ``Fail to send %r`` path is replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, BinaryIO

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from blockradar.clock import Clock, EventTimeGuard, SystemClock
from blockradar.connectors.ami_calls import AmiCallTracker, AmiEventPipeline, LiveEventTime
from blockradar.connectors.base import ConnectorHealth, LinkState, OutcomeSink, RedialSchedule
from blockradar.logs import LabelledLog
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome
from blockradar.secret import Secret

log = logging.getLogger(__name__)

REQUIRED_EVENT_CLASSES = ("system", "call")


class AmiAuthError(RuntimeError):
    """The PBX refused our Login (wrong username or secret; Asterisk does not say which)."""


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    """One AMI connection. ``events`` is the Login ``Events:`` mask; it must include ``system``
    (FullyBooted, Shutdown) and ``call`` (Dial, Hangup); ``dialplan`` and ``user`` carry the glue
    (VarSet, UserEvent)."""

    name: str
    host: str
    username: str
    secret: Secret
    port: int = 5038
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system CA store
    server_name: str | None = None  # TLS server name (SNI + certificate check); default: host
    events: str = "system,call,dialplan,user"
    ping_interval: float = 2.0
    ping_timeout: float = 3.0
    # silent this long, the session is given up if a new connection gets the banner (the PBX is alive, this
    # session is stuck); while new connections get nothing either, the whole PBX is hung: the session is kept
    hung_timeout: float = 60.0
    connect_timeout: float = 10.0
    banner_timeout: float = 3.0  # Asterisk sends its banner at once; none means it is hung: no Login is sent
    login_timeout: float = 10.0  # Asterisk waits 1 s before it says "Authentication failed"
    backoff_initial: float = 0.25
    backoff_max: float = 1.0  # while the PBX is away, try at least this often
    auth_backoff: float = 30.0
    call_ttl: float = 4 * 3600.0  # a leg with no event for this long is dropped (counted)
    clock_skew_tolerance: float = 5.0
    trunks: tuple[str, ...] | None = None  # endpoint names / globs that are trunks; None: by the dialled number
    max_frame_bytes: int = 256 * 1024
    region: str = "US"  # numbers.default_region: caller/callee numbers to E.164

    def __post_init__(self) -> None:
        classes = {c.strip().lower() for c in self.events.split(",")}
        if not classes & {"on", "all"}:
            missing = [c for c in REQUIRED_EVENT_CLASSES if c not in classes]
            if missing:
                raise ValueError(f"AMI events mask {self.events!r} must include {', '.join(missing)}")
        if not isinstance(self.secret, Secret):
            raise TypeError("AsteriskConfig.secret must be a Secret")
        if self.ping_timeout <= 0 or self.ping_interval <= 0:
            raise ValueError("ping_interval and ping_timeout must be positive")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def tls_server_name(self) -> str | None:
        return (self.server_name or self.host) if self.tls else None

    def where(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"


def login_action(config: AsteriskConfig, action_id: str | None = None) -> Action:
    fields = {
        "Action": "Login",
        "Username": config.username,
        "Secret": config.secret.reveal(),
        "Events": config.events,
    }
    if action_id:
        fields["ActionID"] = action_id
    return Action(fields)


# --- panoramisk, reduced to its action machinery ----------------------------------------------


class _AmiProtocol(AMIProtocol):
    """panoramisk's protocol with our hot path: bytes go to the connector, never to
    panoramisk's ``data_received``; only response frames are handed back to its action matching."""

    def __init__(self, connector: AsteriskConnector) -> None:
        super().__init__()
        self._connector = connector
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"
        self.log = log

    def send(self, data: Any, as_list: bool = False) -> asyncio.Future[Any]:
        action = data if isinstance(data, Action) else Action(data, as_list=as_list)
        action.as_list = as_list
        self.responses[action.id] = action
        try:
            self.transport.write(str(action).encode("utf-8"))
        except Exception as exc:  # never %r the action: a Login holds the secret
            log.warning("AMI write failed: %s", type(exc).__name__)
            action.future.cancel()
        return action.future

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self._connector._data_received(self, data)

    def handle_response_frame(self, frame: bytes) -> None:
        message = Message.from_line(frame.decode("utf-8", "replace"))
        if message is not None:
            self.handle_message(message)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        for action in self.responses.values():
            action.future.cancel()  # cancel, not set_exception: nobody may be left to retrieve it
        self.responses.clear()
        if not self.lost.done():
            self.lost.set_result(exc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        transport = self.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


class _GreetingProbe(asyncio.Protocol):
    """A connection that only listens: resolves ``greeted`` True on its first byte or when the PBX closes
    it (alive either way)."""

    def __init__(self, greeted: asyncio.Future[bool]) -> None:
        self._greeted = greeted

    def data_received(self, data: bytes) -> None:
        if not self._greeted.done():
            self._greeted.set_result(True)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._greeted.done():
            self._greeted.set_result(True)


class _AmiManager(Manager):
    """panoramisk's Manager with its own reconnect, pinger and dispatch switched off: the
    connector's supervisor decides when to connect, and events never reach ``dispatch``."""

    def __init__(self, config: AsteriskConfig) -> None:
        super().__init__(
            host=config.host,
            port=config.port,
            events=config.events,
            ping_delay=10**6,
            reconnect_timeout=10**6,
            log=log,
        )

    def attach(self, protocol: _AmiProtocol) -> None:
        protocol.factory = self
        protocol.config = self.config
        self.protocol = protocol
        self.responses = protocol.responses
        self._connected = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connected = False

    def close(self) -> None:
        if self.protocol is not None:
            self.protocol.close()


# --- the connector ------------------------------------------------------------------------------


class AsteriskConnector:
    """An Asterisk AMI connector: ``await start()`` returns at once and the connector connects,
    logs in and reconnects by itself; ``await close()`` stops it (no further attempts)."""

    pbx = "asterisk"

    def __init__(self, config: AsteriskConfig, sink: OutcomeSink, clock: Clock | None = None) -> None:
        self.config = config
        self.name = config.name
        self._sink = sink
        self._clock = clock or SystemClock()
        self._guard = EventTimeGuard(f"asterisk:{config.name}", config.clock_skew_tolerance)
        self.log = LabelledLog(log, {"connector": config.name, "pbx": "asterisk"})  # JSON lines: labels
        self._tracker = AmiCallTracker(connector=config.name, trunks=config.trunks, ttl_s=config.call_ttl,
                                       numbers=NumberPlan(config.region))
        self._pipeline = AmiEventPipeline(
            self._tracker,
            LiveEventTime(self._guard),
            on_response=self._on_response,
            on_control=self._on_control,
        )
        self._pipeline.framer.max_frame_bytes = config.max_frame_bytes
        self._manager = _AmiManager(config)
        self._health = ConnectorHealth(name=config.name, pbx="asterisk", state_since=self._clock.now())
        self._protocol: _AmiProtocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._retry = asyncio.Event()
        self._redial = RedialSchedule(config.backoff_initial, max(config.backoff_max, config.backoff_initial),
                                      config.auth_backoff)
        self._booted: asyncio.Event | None = None
        self._session_logged_in = False
        self._shutdown_restart: bool | None = None
        self._auth_failures = 0
        self._connect_failures = 0
        self._sink_errors = 0
        self._pings = 0
        self._pong_timeouts = 0
        self._whole_pbx_hung = 0  # hang checks where a new connection got no banner either
        self._last_data = 0.0  # monotonic time of the last bytes from the PBX
        self._first_bytes = asyncio.Event()  # this connection has received something (the banner)
        self._silent_connects = 0  # connections in a row that got no banner (a hung PBX)
        self._shutdowns = 0

    # -- Connector protocol -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._closing.clear()
            self._task = asyncio.create_task(self._supervise(), name=f"ami:{self.name}")

    async def close(self) -> None:
        self._closing.set()
        protocol = self._protocol
        if protocol is not None and not protocol.closed and self._health.state == LinkState.CONNECTED:
            # asyncio.wait never raises: a Goodbye, a closed link or the timeout all just end it
            await asyncio.wait({self._manager.send_action({"Action": "Logoff"})}, timeout=0.5)
        if protocol is not None:
            protocol.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state(LinkState.STOPPED)

    def retry_now(self) -> None:
        """Cut short the wait before the next connect attempt (SIGHUP: "I fixed the secret")."""
        self._retry.set()

    def health(self) -> ConnectorHealth:
        h = self._health
        pipe = self._pipeline.stats
        tstats = self._tracker.stats
        return ConnectorHealth(
            name=h.name,
            pbx=h.pbx,
            state=h.state,
            state_since=h.state_since,
            last_event_at=h.last_event_at,
            connects=h.connects,
            reconnects=h.reconnects,
            events=pipe.frames,
            parse_errors=pipe.parse_errors + self._pipeline.framer.stats.oversized,
            dropped=0,
            expired_calls=tstats.expired + tstats.evicted,
            numbers_kept_as_given=self._tracker.numbers.kept_as_given,
            legs_skipped=dict(self._tracker.legs.skipped),
            clock_skewed=self._guard.skewed,
            outcomes=tstats.outcomes,
            last_error=h.last_error,
            last_error_at=h.last_error_at,
            auth_failing=h.auth_failing,
            extra={
                "open_calls": self._tracker.open_legs,
                "duplicates": tstats.duplicates,
                "skipped_frames": pipe.skipped,
                "oversized_frames": self._pipeline.framer.stats.oversized,
                "sink_errors": self._sink_errors,
                "auth_failures": self._auth_failures,
                "connect_failures": self._connect_failures,
                "pings": self._pings,
                "pong_timeouts": self._pong_timeouts,
                "whole_pbx_hung_checks": self._whole_pbx_hung,
                "shutdowns": self._shutdowns,
                "silent_connects": self._silent_connects,
                "in_progress_recovered": tstats.in_progress_recovered,
                "hangups_never_linked": tstats.unlinked_dropped,
                "redials": self._redial.waits,
                "redial_longest_s": round(self._redial.longest, 3),
                "banner": self._pipeline.framer.banner,
            },
        )

    # -- supervisor ------------------------------------------------------------------------------

    def _set_state(self, state: LinkState, error: str | None = None) -> None:
        self._health.set_state(state, self._clock.now(), error)

    async def _supervise(self) -> None:
        redial = self._redial
        while not self._closing.is_set():
            self._set_state(LinkState.CONNECTING)
            self._shutdown_restart = None
            try:
                if await self._session():
                    redial.reset()  # it was up: the loss is retried after the shortest delay
                wait_state = LinkState.BACKING_OFF
            except AmiAuthError:
                wait_state = LinkState.AUTH_FAILED
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self._connect_failures += 1
                reason = f"connect to {self.config.where()} failed: {type(exc).__name__}: {exc}"
                (log.warning if self._connect_failures == 1 else log.debug)("%s: %s", self.name, reason)
                self._set_state(LinkState.BACKING_OFF, reason)
                wait_state = LinkState.BACKING_OFF
            except Exception as exc:  # a bug must not end the supervisor: log, back off, retry
                self.log.exception("%s: AMI session failed unexpectedly", self.name)
                self._set_state(LinkState.BACKING_OFF, f"internal error: {type(exc).__name__}")
                wait_state = LinkState.BACKING_OFF
            finally:
                self._protocol = None
            if self._closing.is_set():
                break
            wait = redial.auth_delay() if wait_state == LinkState.AUTH_FAILED else redial.next_delay()
            self._set_state(wait_state)
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        """Sleep before the next attempt; ``close()`` and ``retry_now()`` cut it short."""
        self._retry.clear()
        waiters = {asyncio.ensure_future(self._closing.wait()), asyncio.ensure_future(self._retry.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _session(self) -> bool:
        """One connection, from connect to loss. Returns whether Login succeeded."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._pipeline.framer.reset()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                self._new_protocol,
                cfg.host,
                cfg.port,
                ssl=cfg.ssl_context(),
                server_hostname=cfg.tls_server_name(),
            ),
            cfg.connect_timeout,
        )
        self._manager.attach(protocol)
        self._booted = asyncio.Event()
        self._session_logged_in = False
        try:
            # A hung Asterisk still completes the TCP handshake (its kernel queues the connection) but says
            # nothing. No Login is sent then: it would sit in the queue and be processed, stale, at SIGCONT.
            banner = asyncio.ensure_future(self._first_bytes.wait())
            done, _ = await asyncio.wait({banner, protocol.lost}, timeout=cfg.banner_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            banner.cancel()
            if not self._first_bytes.is_set():
                self._silent_connects += 1
                reason = ("connection lost before the banner" if protocol.lost.done()
                          else f"connected, but no AMI banner within {cfg.banner_timeout:g} s: PBX not answering")
                self._set_state(LinkState.BACKING_OFF, reason)
                (log.warning if self._silent_connects == 1 else log.debug)("%s: %s", self.name, reason)
                return False
            self._connect_failures = 0
            self._silent_connects = 0
            # no DialBegin from before this moment can reach us: legs created earlier may hang up without one
            self._tracker.session_started(self._clock.now())
            self._set_state(LinkState.AUTHENTICATING)
            login = self._manager.send_action(login_action(cfg))
            done, _ = await asyncio.wait(
                {login, protocol.lost}, timeout=cfg.login_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if login not in done or login.cancelled() or login.exception() is not None:
                reason = "connection lost during login" if protocol.lost.done() else "no reply to Login"
                self._set_state(LinkState.BACKING_OFF, reason)
                self.log.warning("%s: %s (%s)", self.name, reason, cfg.where())
                return False
            response = login.result()
            if not response.success:
                self._auth_failed(str(response.get("Message", "") or "Authentication failed"))
                raise AmiAuthError(cfg.username)
            self._logged_in()
            await self._watch(protocol)
            return True
        finally:
            protocol.close()
            if not protocol.lost.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.lost), 1.0)

    def _new_protocol(self) -> _AmiProtocol:
        # Set before connection_made: the banner can arrive before create_connection returns.
        self._protocol = _AmiProtocol(self)
        self._first_bytes = asyncio.Event()
        return self._protocol

    def _auth_failed(self, message: str) -> None:
        self._auth_failures += 1
        message = "".join(ch if ch.isprintable() else "?" for ch in message[:80])  # network text
        text = (
            f"AMI login refused by {self.config.where()} for user {self.config.username!r}: "
            f"{message}; retrying every {self.config.auth_backoff:g} s and on reload (SIGHUP)"
        )
        if self._auth_failures == 1:
            self.log.error("%s: %s (check the username and secret in the config)", self.name, text)
        else:
            self.log.debug("%s: %s (attempt %d)", self.name, text, self._auth_failures)
        self._set_state(LinkState.AUTH_FAILED, text)

    def _logged_in(self) -> None:
        self._session_logged_in = True
        h = self._health
        h.connects += 1
        if h.connects > 1:
            h.reconnects += 1
        if self._auth_failures:
            self.log.info("%s: AMI login accepted again after %d failure(s)", self.name, self._auth_failures)
        self._auth_failures = 0
        self.log.info(
            "%s: logged in to %s (%s)", self.name, self.config.where(), self._pipeline.framer.banner or "no banner"
        )
        if self._booted is not None and self._booted.is_set():
            self._set_state(LinkState.CONNECTED)

    async def _watch(self, protocol: _AmiProtocol) -> None:
        """Until the link is lost: Ping every ``ping_interval``; no Pong in ``ping_timeout`` -> abort."""
        cfg = self.config
        logged_in_at = self._clock.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.lost), cfg.ping_interval)
            booted = self._booted
            if (
                booted is not None
                and not booted.is_set()
                and not protocol.lost.done()
                and self._clock.monotonic() - logged_in_at > cfg.login_timeout
            ):
                self.log.warning(
                    "%s: no FullyBooted %g s after login: does the AMI user have read=system and "
                    "the events mask include system? Treating the link as up.",
                    self.name,
                    cfg.login_timeout,
                )
                booted.set()
                self._set_state(LinkState.CONNECTED)
            if protocol.lost.done():
                if self._closing.is_set():
                    return
                exc = protocol.lost.result()
                reason = "connection closed by the PBX" if exc is None else f"connection lost: {exc}"
                if self._shutdown_restart is not None:
                    reason = f"PBX shut down (Restart: {self._shutdown_restart})"
                self._set_state(LinkState.BACKING_OFF, reason)
                self.log.warning("%s: %s", self.name, reason)
                return
            self._tracker.expire(self._clock.now())
            self._pings += 1
            ping = self._manager.send_action({"Action": "Ping"})
            while True:
                done, _ = await asyncio.wait(
                    {ping, protocol.lost}, timeout=cfg.ping_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                # a Pong queued behind a burst of events is late, not missing: bytes arriving prove life
                if done or self._clock.monotonic() - self._last_data > cfg.ping_timeout:
                    break
            if not done and not await self._hung(protocol, ping):
                return

    async def _hung(self, protocol: _AmiProtocol, ping: asyncio.Future[Any]) -> bool:
        """No Pong and not a byte: the PBX is presumed hung. The link is down (UNRESPONSIVE) but the session
        is kept: Asterisk queues the events for it and sends them the moment it resumes, where a new
        session would miss every call that ends then. After ``hung_timeout`` a second connection tells a
        hung PBX (no banner for anyone: keep waiting) from a stuck session (the PBX greets the newcomer:
        give it up). Returns True when it answers again, False when the session is given up."""
        cfg = self.config
        self._pong_timeouts += 1
        since = self._clock.monotonic()
        reason = (f"no Pong within {cfg.ping_timeout:g} s: PBX presumed hung; keeping the session for what it "
                  f"queues")
        self.log.warning("%s: %s", self.name, reason)
        self._set_state(LinkState.UNRESPONSIVE, reason)
        next_check = since + cfg.hung_timeout
        give_up_at: float | None = None
        probe: asyncio.Future[bool] | None = None
        whole_pbx_hung = False  # said once per hang
        try:
            while True:
                waiters = {ping, protocol.lost} if probe is None else {ping, protocol.lost, probe}
                await asyncio.wait(waiters, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                if protocol.lost.done():
                    return True  # lost: the caller's loop reports why
                if self._answers_since(ping, since):
                    return True
                now = self._clock.monotonic()
                if give_up_at is not None:
                    if now < give_up_at:
                        continue
                    reason = (f"no answer for {now - since:.0f} s while the PBX greets a new connection: "
                              f"giving up on the session, reconnecting")
                    self.log.warning("%s: %s", self.name, reason)
                    self._set_state(LinkState.BACKING_OFF, reason)
                    protocol.abort()
                    return False
                if probe is None:
                    if now >= next_check:
                        probe = asyncio.ensure_future(self._pbx_greets_a_new_connection())
                    continue
                if not probe.done():
                    continue
                greets, probe = probe.result(), None
                if greets:
                    # a PBX that just resumed flushes this session too: a Pong's time for that
                    give_up_at = now + cfg.ping_timeout
                    continue
                self._whole_pbx_hung += 1
                if not whole_pbx_hung:
                    whole_pbx_hung = True
                    reason = (f"no answer for {now - since:.0f} s, and a new connection gets no banner "
                              f"either: the whole PBX is hung; keeping the session until it resumes")
                    self.log.warning("%s: %s", self.name, reason)
                    self._set_state(LinkState.UNRESPONSIVE, reason)
                # asked again once per hung_timeout: each unanswered connection waits in the PBX's accept
                # queue and is logged there as "unable to authenticate" when it resumes
                next_check = now + cfg.hung_timeout
        finally:
            if probe is not None:
                probe.cancel()

    def _answers_since(self, ping: asyncio.Future[Any], since: float) -> bool:
        """The hung session spoke again (a Pong or any byte): back to CONNECTED, logged."""
        if not (ping.done() or self._last_data > since):
            return False
        self.log.warning("%s: the PBX answers again after %.1f s; the session and its queued events were kept",
                    self.name, self._clock.monotonic() - since)
        self._set_state(LinkState.CONNECTED)
        return True

    async def _pbx_greets_a_new_connection(self) -> bool:
        """Open a second connection and wait ``banner_timeout`` for the banner. True: the PBX greets it, or
        refuses it (nothing listens: the session is stale either way). False: connected but silent, or no
        answer to the TCP handshake at all (the PBX, its host or the path is hung). Nothing is sent on it."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        greeted: asyncio.Future[bool] = loop.create_future()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _GreetingProbe(greeted), cfg.host, cfg.port,
                                       ssl=cfg.ssl_context(), server_hostname=cfg.tls_server_name()),
                cfg.connect_timeout,
            )
        except ConnectionRefusedError:
            return True
        except (OSError, TimeoutError):
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(greeted), cfg.banner_timeout)
        except TimeoutError:
            return False
        finally:
            transport.abort()

    # -- data path -------------------------------------------------------------------------------

    def _data_received(self, protocol: _AmiProtocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        now = self._clock.now()
        self._last_data = self._clock.monotonic()
        self._first_bytes.set()
        try:
            outcomes = self._pipeline.feed(data, now)
        except Exception:  # must never escape data_received (asyncio would drop the link)
            self._pipeline.stats.parse_errors += 1
            self.log.exception("%s: AMI data could not be processed; chunk skipped", self.name)
            return
        self._health.last_event_at = now
        for outcome in outcomes:
            self._deliver(outcome)

    def _deliver(self, outcome: CallOutcome) -> None:
        try:
            self._sink(outcome)
        except Exception as exc:  # P-1: a raising sink never drops the connection
            self._sink_errors += 1
            self.log.error(
                "%s: outcome sink raised %s; outcome %s dropped",
                self.name,
                type(exc).__name__,
                outcome.call_id,
                exc_info=True,
            )

    def _on_response(self, frame: bytes) -> None:
        if self._protocol is not None:
            self._protocol.handle_response_frame(frame)

    def _on_control(self, event: dict[str, str]) -> None:
        name = event.get("Event")
        if name == "FullyBooted":
            # It may arrive in the same read as the Login response, before the login future's
            # waiter ran; then _logged_in() sets CONNECTED.
            if self._booted is not None:
                self._booted.set()
            if self._session_logged_in:
                self._set_state(LinkState.CONNECTED)
        elif name == "Shutdown":
            self._shutdowns += 1
            self._shutdown_restart = event.get("Restart", "").lower() == "true"
            self.log.warning(
                "%s: PBX announced shutdown (%s, Restart: %s); trying it again every second",
                self.name,
                event.get("Shutdown", "?"),
                self._shutdown_restart,
            )
            if self._protocol is not None:
                self._protocol.close()  # the PBX closes next anyway; do not send on it


# --- recording ----------------------------------------------------------------------------------


async def record_ami(config: AsteriskConfig, out: BinaryIO, stop: asyncio.Event) -> int:
    """Records one live AMI session byte-exact (banner, responses, events) into ``out`` until
    ``stop`` is set or the PBX closes; returns the number of bytes written. The file has the
    format of shared/fixtures/asterisk/*.ami, so ``blockradar replay`` reads it. On stop it sends
    Logoff and records up to the Goodbye. Raises ``AmiAuthError`` if Login is refused (nothing
    but the banner and the error reply are then written) and ``OSError`` if it cannot connect."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            config.host,
            config.port,
            ssl=config.ssl_context(),
            server_hostname=config.tls_server_name(),
        ),
        config.connect_timeout,
    )
    written = 0
    login_seen = bytearray()
    checking_login = True
    try:
        writer.write(str(login_action(config, "blockradar-record-login")).encode("utf-8"))
        await writer.drain()
        stop_wait = asyncio.ensure_future(stop.wait())
        logoff_sent = False
        try:
            while True:
                read = asyncio.ensure_future(reader.read(65536))
                done, _ = await asyncio.wait({read, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    if logoff_sent:
                        break
                    writer.write(b"Action: Logoff\r\nActionID: blockradar-record-logoff\r\n\r\n")
                    await writer.drain()
                    logoff_sent = True
                    stop_wait = asyncio.ensure_future(asyncio.sleep(2.0))  # wait for Goodbye + EOF
                    continue
                chunk = read.result()
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
                if checking_login:
                    login_seen += chunk
                    if b"Message: Authentication failed" in login_seen:
                        raise AmiAuthError(config.username)
                    if b"Authentication accepted" in login_seen or len(login_seen) > 65536:
                        checking_login = False
                        login_seen.clear()
        finally:
            stop_wait.cancel()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return written
