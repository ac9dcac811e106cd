"""This daemon's membership in a fleet: one shared stream of outcomes, the notifier lease, the members and
the silences, on one Redis; and the daemon's life alone while Redis is away.

**Shared mode** (Redis answers). An outcome of this daemon's PBX is appended to the shared stream
(``scripts.PUBLISH``: once per call key fleet-wide) and counted when the stream's reader gets it back,
together with every other daemon's outcomes, in stream order. So every daemon's windows hold the whole
fleet's calls and every daemon judges the same thresholds on them: a number blocked 20 times on one PBX
and 9 times on another crosses a threshold of 25 everywhere. The stream keeps the longest window of
outcomes (``MINID`` trimming on every append) and a new or restarted daemon rebuilds its windows from it.
The notifier lease says which daemon sends (``told.NotificationGate``).

**Local mode** (Redis unreachable, or slower than ``fleet.timeout``). The daemon counts its own outcomes
at once, alerts and notifies on what it sees, and says so (``on_mode``: a self-alert, ``/healthz``).
What it counts alone is kept (``backlog``, bounded) and what it tells is remembered. Outcomes sent
for publishing but not read back when Redis went away are counted at once too. When Redis answers
again the node logs what it told, publishes the backlog (the call keys make that idempotent) and reads
the stream on from where it stopped: the other daemons' calls of the outage come in late and are
counted in their right buckets, its own come back and are skipped (``_counted``). Nothing is counted
twice, nothing is lost, and the notification log keeps everyone from telling again what was told.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from blockradar.alerting.silences import Matcher, Silence
from blockradar.classification import Classification
from blockradar.config import FleetConfig
from blockradar.fleet import scripts
from blockradar.fleet.client import FLEET_ERRORS, READ_BLOCK_MS, build_client, where
from blockradar.fleet.told import TOLD_TTL_S
from blockradar.fleet.wire import call_key, decode, encode
from blockradar.outcome import CallOutcome

log = logging.getLogger(__name__)

SHARED = "shared"
LOCAL = "local"
STARTING = "starting"
STOPPED = "stopped"

PUBLISH_BATCH = 500  # outcomes per PUBLISH script call
# stream entries per read: decoded and judged without a pause (~30 us each), so a daemon catching up after a
# burst or an outage holds its event loop a few ms at a time, never longer
READ_BATCH = 200
HISTORY_BATCH = 1000
HOUSEKEEPING_S = 5.0  # silences, members' settings, the counted-alone set
TOLD_KEPT = 10_000  # transitions told while alone, logged when Redis is back
SILENCE_KEPT_S = 86400.0  # an expired silence is still shared for a day (its expiry must reach everyone)
BAD_LOGGED = 5  # unreadable entries logged one by one; after that only counted

T = TypeVar("T")
Judge = Callable[[CallOutcome, Classification], None]
Classified = tuple[CallOutcome, Classification]


class SilenceStore(Protocol):
    def list_silences(self, *, include_expired: bool = False, now: float | None = None) -> list[Silence]: ...

    def add_silence(self, silence: Silence) -> None: ...


class FleetNode:
    """See the module docstring. Runs on the daemon's event loop; ``submit`` is called for every outcome."""

    def __init__(self, cfg: FleetConfig, *, member: str, retention_s: float, judge: Judge, digest: str = "",
                 now: Callable[[], float] = time.time, on_mode: Callable[[bool, str], None] | None = None,
                 silences: SilenceStore | None = None, on_silences: Callable[[], None] | None = None,
                 client: Any | None = None) -> None:
        self.cfg = cfg
        self.member = member
        self.token = f"{member}#{secrets.token_hex(4)}"  # this process: two daemons given one name stay apart
        self.retention_ms = int(retention_s * 1000) + 60_000  # the longest window and a minute of slack
        self.judge = judge
        self.digest = digest  # what this daemon alerts on (thresholds, alerting); the members compare
        self.now = now
        self.on_mode = on_mode
        self.silence_store = silences
        self.on_silences = on_silences  # a silence came from the fleet: the daemon's alerts look at once
        self.redis = client if client is not None else build_client(cfg)
        self.where = where(cfg)
        p = cfg.prefix
        self.k_stream = f"{p}:outcomes"
        self.k_lease = f"{p}:notifier-lease"
        self.k_members = f"{p}:members"
        self.k_settings = f"{p}:member-settings"
        self.k_silences = f"{p}:silences"
        self.k_epoch = f"{p}:epoch"
        self._publish = self.redis.register_script(scripts.PUBLISH)
        self._lease = self.redis.register_script(scripts.LEASE)
        self._release = self.redis.register_script(scripts.RELEASE)
        self._told = self.redis.register_script(scripts.TOLD)
        self.mode = STARTING
        self.since = now()
        self._local_since = 0.0  # monotonic, when local mode began
        self.error: str | None = None
        self.epoch: bytes | None = None
        self.last_id = b"0-0"  # the stream position read up to
        self.leader: str | None = None  # who holds the notifier lease, as last seen
        self._leader_until = 0.0  # monotonic: this daemon may send until then
        self.members = 0
        self.mismatched: list[str] = []  # members whose thresholds or alerting differ from ours
        self._outgoing: collections.deque[tuple[str, bytes]] = collections.deque()
        self._outgoing_event = asyncio.Event()
        self._in_transit: dict[str, tuple[CallOutcome, Classification, bytes]] = {}
        self._counted: dict[str, float] = {}  # call key -> when it was counted alone (monotonic)
        self._backlog: collections.deque[tuple[str, bytes]] = collections.deque()
        self._told_alone: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=TOLD_KEPT)
        self._task: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Future[None]] = []
        self._warned_mismatch: set[str] = set()
        self.eviction: str | None = None  # Redis's maxmemory-policy when it may evict the fleet's keys
        self.stats = {"published": 0, "duplicates": 0, "read": 0, "skipped": 0, "bad": 0, "counted_alone": 0,
                      "backlog_dropped": 0, "told_logged": 0, "told_dropped": 0, "outages": 0, "data_lost": 0,
                      "lease_taken": 0}

    # -- keys --------------------------------------------------------------------------------------
    def _seen_key(self, key: str) -> str:
        return f"{self.cfg.prefix}:seen:{key}"

    def _told_key(self, notifier: str, fingerprint: str) -> str:
        return f"{self.cfg.prefix}:told:{notifier}:{fingerprint}"

    # -- state ---------------------------------------------------------------------------------------
    @property
    def shared(self) -> bool:
        return self.mode == SHARED

    @property
    def alone(self) -> bool:
        """Redis has been away for ``lease``: this daemon tells what it sees itself. Before that its rows
        wait (a blip of a slow Redis must not make a standby send what the holder sends; by then the
        holder's lease has run out anyway)."""
        return self.mode == LOCAL and time.monotonic() - self._local_since >= self.cfg.lease

    def update(self, retention_s: float, digest: str) -> None:
        """A reload changed the thresholds: a longer window keeps the stream longer; the members compare anew."""
        self.retention_ms = int(retention_s * 1000) + 60_000
        self.digest = digest

    def is_leader(self) -> bool:
        return self.mode == SHARED and time.monotonic() < self._leader_until

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def report(self) -> dict[str, Any]:
        """For /healthz and /metrics."""
        shared = self.mode == SHARED
        notifier = self.leader.partition("#")[0] if shared and self.leader else None
        return {
            "mode": self.mode, "since": self.since, "error": self.error, "redis": self.where,
            "member": self.member,
            # alone (for ``lease``), this daemon sends what it sees; it knows neither the members nor the notifier
            "notifier": notifier if shared else (self.member if self.alone else None),
            "notifies": self.is_leader() or self.alone, "members": self.members if shared else None,
            "backlog": len(self._backlog),
            "in_transit": len(self._in_transit), "told_waiting": len(self._told_alone),
            "settings_differ": list(self.mismatched), "eviction": self.eviction, **self.stats,
        }

    async def _bounded(self, call: Awaitable[T], extra_s: float = 0.0) -> T:
        return await asyncio.wait_for(call, self.cfg.timeout + extra_s)

    # -- start ---------------------------------------------------------------------------------------
    async def join(self, own: Iterable[Classified]) -> bool:
        """At start: publish this daemon's stored outcomes of the window (idempotent: most were published
        before; those a crash kept from Redis are not lost). True when Redis answered: the caller rebuilds
        its windows from ``history()``. False: ``own`` is counted alone (the caller rebuilds from it) and
        published once Redis answers."""
        own = list(own)
        try:
            await self._connect()
            await self._publish_all([(call_key(o), encode(o, c)) for o, c in own])
        except FLEET_ERRORS as exc:
            self.alone_from_start(exc, own)
            return False
        self._set_shared()
        return True

    def alone_from_start(self, exc: BaseException, own: Iterable[Classified]) -> None:
        """Redis failed before or while the windows were rebuilt: the caller rebuilds them from ``own``
        alone; the stream is read from its start once Redis answers (own entries in it skipped)."""
        self._go_local(exc)
        self.last_id = b"0-0"
        for outcome, cls in own:
            self._count_alone(call_key(outcome), encode(outcome, cls))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.is_leader():  # hand the lease over at once rather than after ``lease``
            with contextlib.suppress(*FLEET_ERRORS):
                await self._bounded(self._release(keys=[self.k_lease], args=[self.token]))
            self._leader_until = 0.0
        if self.shared:  # no longer a member (else counted for 3 leases more)
            with contextlib.suppress(*FLEET_ERRORS):
                await self._bounded(self.redis.zrem(self.k_members, self.token))
                await self._bounded(self.redis.hdel(self.k_settings, self.token))
        if self.shared and self._outgoing:
            with contextlib.suppress(*FLEET_ERRORS):
                await self._publish_all(list(self._outgoing))
        self.mode = STOPPED  # the outbox's gate holds what is left for the next start (or the next holder)
        with contextlib.suppress(*FLEET_ERRORS, RuntimeError):
            await self.redis.aclose()

    def history(self) -> AsyncIterator[list[Classified]]:
        """The retained stream, oldest first, in batches (a window of a busy fleet is never all in memory);
        the reader goes on from its end. Entries this daemon counted alone are skipped."""
        return self._range(b"-", None, consume=True)

    async def read_so_far(self) -> AsyncIterator[list[Classified]]:
        """Everything the reader has judged, in batches (a reload rebuilds its new windows from it): the
        retained stream up to the reader's position, caught up again if the reader moved on meanwhile."""
        end = self.last_id
        async for batch in self._range(b"-", end, consume=False):
            yield batch
        while self.last_id != end:
            start, end = b"(" + end, self.last_id
            async for batch in self._range(start, end, consume=False):
                yield batch

    async def _range(self, start: bytes, until: bytes | None, *, consume: bool) -> AsyncIterator[list[Classified]]:
        while True:
            entries = await self._bounded(self.redis.xrange(self.k_stream, start, until or b"+", count=HISTORY_BATCH),
                                          extra_s=5.0)
            out: list[Classified] = []
            for entry_id, fields in entries:
                start = b"(" + entry_id
                if consume:
                    self.last_id = entry_id
                item = self._decoded(fields.get(b"o"))
                if item is not None and not self._counted_alone(call_key(item[0]), consume=consume):
                    out.append(item)
            yield out
            if len(entries) < HISTORY_BATCH:
                return

    # -- the data path -----------------------------------------------------------------------------
    def submit(self, outcome: CallOutcome, cls: Classification) -> None:
        """One outcome of this daemon's PBX: published (shared) or counted at once (local)."""
        payload = encode(outcome, cls)
        key = call_key(outcome)
        if self.mode == SHARED:
            if len(self._in_transit) >= self.cfg.backlog:  # Redis answers, but slower than the PBX calls
                self._go_local(FleetBehind(f"{len(self._in_transit)} outcomes published but not read back"))
            else:
                self._in_transit[key] = (outcome, cls, payload)
                self._outgoing.append((key, payload))
                self._outgoing_event.set()
                return
        self._count_alone(key, payload)
        self.judge(outcome, cls)

    def _count_alone(self, key: str, payload: bytes) -> None:
        now = time.monotonic()
        self._counted.pop(key, None)
        self._counted[key] = now  # insertion order is time order: ``_prune_counted`` lets go from the front
        self._prune_counted(now)
        self.stats["counted_alone"] += 1
        if len(self._backlog) >= self.cfg.backlog:
            self._backlog.popleft()
            self.stats["backlog_dropped"] += 1
        self._backlog.append((key, payload))

    def _prune_counted(self, now: float) -> None:
        """Forget calls counted alone longer ago than the retention (their entries left the stream), and the
        oldest beyond twice the backlog (a bound in memory whatever an outage lasts)."""
        counted = self._counted
        horizon = now - self.retention_ms / 1000
        while counted:
            oldest = next(iter(counted))
            if counted[oldest] >= horizon and len(counted) <= 2 * self.cfg.backlog:
                break
            del counted[oldest]

    def _counted_alone(self, key: str, *, consume: bool) -> bool:
        """This call was counted alone while Redis was away (its entry, published since, is skipped);
        ``consume``: it is read now, so it is forgotten and counted as skipped."""
        if key not in self._counted:
            return False
        if consume:
            del self._counted[key]
            self.stats["skipped"] += 1
        return True

    def _decoded(self, payload: Any) -> tuple[CallOutcome, Classification] | None:
        try:
            if not isinstance(payload, bytes):
                raise ValueError("no outcome field")
            return decode(payload)
        except (ValueError, TypeError) as exc:
            self.stats["bad"] += 1
            if self.stats["bad"] <= BAD_LOGGED:
                log.warning("fleet: an unreadable entry in %s skipped (%s)%s", self.k_stream, exc,
                            "; further ones are only counted" if self.stats["bad"] == BAD_LOGGED else "")
            return None

    async def _publish_all(self, items: list[tuple[str, bytes]]) -> list[bool]:
        """Append (call key, payload) pairs; True for each that was new, False for a call already there."""
        results: list[bool] = []
        for i in range(0, len(items), PUBLISH_BATCH):
            batch = items[i:i + PUBLISH_BATCH]
            keys = [self.k_stream] + [self._seen_key(k) for k, _ in batch]
            ids = await self._bounded(self._publish(keys=keys, args=[self.retention_ms] + [p for _, p in batch]))
            for entry_id in ids:
                new = bool(entry_id)
                results.append(new)
                self.stats["published" if new else "duplicates"] += 1
        return results

    async def _publisher(self) -> None:
        while True:
            if not self._outgoing:
                self._outgoing_event.clear()
                await self._outgoing_event.wait()
            batch = [self._outgoing.popleft() for _ in range(min(PUBLISH_BATCH, len(self._outgoing)))]
            try:
                results = await self._publish_all(batch)
            except BaseException:
                self._outgoing.extendleft(reversed(batch))  # still in transit: counted alone if Redis is gone
                raise
            for (key, _), new in zip(batch, results, strict=True):
                if not new:  # another daemon watching the same PBX published this call: its entry counts
                    self._in_transit.pop(key, None)

    async def _reader(self) -> None:
        while True:
            answer = await self._bounded(
                self.redis.xread({self.k_stream: self.last_id}, count=READ_BATCH, block=READ_BLOCK_MS),
                extra_s=READ_BLOCK_MS / 1000)
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    self._take(fields.get(b"o"))

    def _take(self, payload: Any) -> None:
        item = self._decoded(payload)
        if item is None:
            return
        outcome, cls = item
        key = call_key(outcome)
        if self._counted_alone(key, consume=True):
            return
        self._in_transit.pop(key, None)
        self.stats["read"] += 1
        self.judge(outcome, cls)

    # -- the lease and the members -------------------------------------------------------------------
    async def _leaseholder(self) -> None:
        every = self.cfg.lease / 3
        ttl_ms = int(self.cfg.lease * 1000)
        while True:
            asked = time.monotonic()
            got, holder = await self._bounded(self._lease(keys=[self.k_lease], args=[self.token, ttl_ms]))
            was = self.is_leader()
            holder = holder.decode() if isinstance(holder, bytes) else holder
            if got:
                # ours until the lease would run out at Redis, less one timeout of slack for the answer's trip
                self._leader_until = asked + self.cfg.lease - self.cfg.timeout
                if not was:
                    self.stats["lease_taken"] += 1
                    log.warning("fleet: this daemon (%s) now sends the fleet's notifications", self.member)
            else:
                self._leader_until = 0.0
                if was:
                    log.warning("fleet: %s sends the fleet's notifications now; this daemon stands by",
                                str(holder).partition("#")[0])
            self.leader = holder
            seconds, micros = await self._bounded(self.redis.time())  # one clock for every member: Redis's
            now_ms = seconds * 1000 + micros // 1000
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.k_members, {self.token: now_ms})
            pipe.zremrangebyscore(self.k_members, 0, now_ms - 3 * ttl_ms)
            pipe.zcard(self.k_members)
            pipe.hset(self.k_settings, self.token, self.digest)
            result = await self._bounded(pipe.execute())
            self.members = int(result[2])
            await asyncio.sleep(every)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self._prune_counted(time.monotonic())
            await self._compare_settings()
            await self.sync_silences()

    async def _compare_settings(self) -> None:
        members = await self._bounded(self.redis.zrange(self.k_members, 0, -1))
        settings = await self._bounded(self.redis.hgetall(self.k_settings))
        live = {m for m in members}
        stale = [m for m in settings if m not in live]
        if stale:
            await self._bounded(self.redis.hdel(self.k_settings, *stale))
        differ = sorted(m.decode("utf-8", "replace").partition("#")[0] for m, d in settings.items()
                        if m in live and d.decode("utf-8", "replace") != self.digest)
        for name in differ:
            if name not in self._warned_mismatch:
                self._warned_mismatch.add(name)
                log.warning("fleet: member %s alerts on other thresholds or alerting settings than this daemon; "
                            "the fleet's daemons should share them (each judges the same windows)", name)
        self.mismatched = differ

    # -- silences --------------------------------------------------------------------------------------
    async def sync_silences(self) -> None:
        """Silences added on any daemon (``blockradar silence`` writes its store) reach every daemon: the
        union by id, where an expiry (the earlier end) wins."""
        store = self.silence_store
        if store is None:
            return
        now = self.now()
        try:
            local = {s.id: s for s in store.list_silences(include_expired=True) if s.ends_at > now - SILENCE_KEPT_S}
        except Exception as exc:  # the store's trouble is the daemon's to report (store-failing), not Redis's
            log.debug("fleet: silences not synced: the store cannot be read (%s)", type(exc).__name__)
            return
        shared_raw = await self._bounded(self.redis.hgetall(self.k_silences))
        shared: dict[str, Silence] = {}
        for raw in shared_raw.values():
            silence = _silence(raw)
            if silence is not None:
                shared[silence.id] = silence
        push = {sid: s for sid, s in local.items() if sid not in shared or shared[sid].ends_at > s.ends_at}
        if push:
            await self._bounded(self.redis.hset(self.k_silences, mapping={
                sid: json.dumps(s.to_dict()) for sid, s in push.items()}))
        adopted = 0
        for sid, silence in shared.items():
            newer = sid not in local or local[sid].ends_at > silence.ends_at
            if newer and silence.ends_at > now - SILENCE_KEPT_S:
                try:
                    store.add_silence(silence)
                except Exception as exc:
                    log.debug("fleet: silence %s not stored (%s)", sid, type(exc).__name__)
                    continue
                adopted += 1
        if adopted and self.on_silences is not None:
            self.on_silences()
        old = [sid for sid, s in shared.items() if s.ends_at <= now - SILENCE_KEPT_S]
        if old:
            await self._bounded(self.redis.hdel(self.k_silences, *old))

    # -- the notification log (for told.NotificationGate) ----------------------------------------------
    async def told_entries(self, notifier: str, fingerprints: list[str]) -> list[bytes | None]:
        try:
            return list(await self._bounded(self.redis.mget([self._told_key(notifier, fp) for fp in fingerprints])))
        except FLEET_ERRORS as exc:
            self._lost(exc)
            return [None] * len(fingerprints)

    async def record_told(self, notifier: str, entries: list[tuple[str, str]]) -> None:
        if self.mode == SHARED:
            try:
                await self._record_told(notifier, entries)
                return
            except FLEET_ERRORS as exc:
                self._lost(exc)
        room = self._told_alone.maxlen - len(self._told_alone)  # type: ignore[operator]
        if len(entries) > room:
            self.stats["told_dropped"] += len(entries) - room  # told again once Redis is back (at most)
        self._told_alone.extend((notifier, fp, text) for fp, text in entries)

    async def _record_told(self, notifier: str, entries: list[tuple[str, str]]) -> None:
        keys = [self._told_key(notifier, fp) for fp, _ in entries]
        await self._bounded(self._told(keys=keys, args=[int(TOLD_TTL_S)] + [text for _, text in entries]))
        self.stats["told_logged"] += len(entries)

    # -- modes ---------------------------------------------------------------------------------------
    async def _connect(self) -> None:
        await self._bounded(self.redis.ping())
        await self._bounded(self.redis.set(self.k_epoch, secrets.token_hex(8), nx=True))
        epoch = await self._bounded(self.redis.get(self.k_epoch))
        if self.epoch is not None and epoch != self.epoch:
            self.stats["data_lost"] += 1
            log.error("fleet: Redis at %s came back without the fleet's data (a restart without persistence): "
                      "running daemons keep their windows; a daemon started now rebuilds from what is published "
                      "from now on. Give Redis persistence (appendonly yes)", self.where)
        self.epoch = epoch
        policy = (await self._bounded(self.redis.info("memory"))).get("maxmemory_policy", "noeviction")
        policy = policy.decode() if isinstance(policy, bytes) else str(policy)
        if policy != "noeviction":
            if self.eviction != policy:
                log.warning("fleet: Redis at %s may evict keys (maxmemory-policy %s): a lease, a call's claim or "
                            "the notification log evicted means two notifiers, a call counted twice or a "
                            "transition told twice; set maxmemory-policy noeviction", self.where, policy)
            self.eviction = policy
        else:
            self.eviction = None

    async def _rejoin(self) -> None:
        """Redis answers again: log what was told alone, publish what was counted alone, read on."""
        with contextlib.suppress(*FLEET_ERRORS):  # connections of before the outage: a restarted server closed them
            await self.redis.connection_pool.disconnect()
        await self._connect()
        self._outgoing.clear()  # what the publisher put back when it was stopped: in the backlog now
        while self._told_alone:
            batch = [self._told_alone.popleft() for _ in range(min(PUBLISH_BATCH, len(self._told_alone)))]
            by_notifier: dict[str, list[tuple[str, str]]] = {}
            for notifier, fp, text in batch:
                by_notifier.setdefault(notifier, []).append((fp, text))
            try:
                for notifier, entries in by_notifier.items():
                    await self._record_told(notifier, entries)
            except BaseException:
                self._told_alone.extendleft(reversed(batch))
                raise
        await self.sync_silences()
        # last, and until it is empty (outcomes keep coming while it is published): ``_run`` then switches to
        # shared without a pause in between, so nothing counted alone stays unpublished
        backlog = self._backlog
        while backlog:
            batch = [backlog[i] for i in range(min(PUBLISH_BATCH, len(backlog)))]
            await self._publish_all(batch)
            for item in batch:  # those the bound let go meanwhile (from the front) are gone already
                if backlog and backlog[0] is item:
                    backlog.popleft()

    def _set_shared(self) -> None:
        was = self.mode
        self.mode, self.since, self.error = SHARED, self.now(), None
        if was == LOCAL:
            log.warning("fleet: Redis at %s answers again: sharing windows and alerts with the fleet (what was "
                        "counted alone is published, what was told alone is logged)", self.where)
        else:
            log.info("fleet: member %s sharing windows and alerts through %s", self.member, self.where)
        if self.on_mode is not None:
            self.on_mode(True, "")

    def _lost(self, exc: BaseException) -> None:
        if self.mode != LOCAL:
            self._go_local(exc)

    def _go_local(self, exc: BaseException) -> None:
        detail = _words(exc)
        was = self.mode
        self.mode, self.since, self.error = LOCAL, self.now(), detail
        self._local_since = time.monotonic()
        self._leader_until = 0.0
        for loop in self._loops:  # the reader and the others stop; ``_run`` tries Redis again after ``retry``
            loop.cancel()
        self.stats["outages"] += 1
        # sent to Redis but not read back: count them now (those that did reach the stream are skipped later)
        in_transit = list(self._in_transit.items())
        self._in_transit.clear()
        self._outgoing.clear()
        for key, (outcome, cls, payload) in in_transit:
            self._count_alone(key, payload)
            self.judge(outcome, cls)
        log.error("fleet: Redis at %s %s (%s): this daemon alerts and notifies on its own PBX's calls alone until "
                  "it answers", self.where, "is unreachable" if was == STARTING else "was lost", detail)
        if self.on_mode is not None:
            self.on_mode(False, detail)

    async def _run(self) -> None:
        while True:
            if self.mode != SHARED:
                try:
                    await self._rejoin()
                except FLEET_ERRORS as exc:
                    self.error = _words(exc)
                    await asyncio.sleep(self.cfg.retry)
                    continue
                except Exception as exc:  # a bug must not leave the daemon alone for good: logged, tried again
                    self.error = _words(exc)
                    log.error("fleet: internal error rejoining (%s); trying again", self.error, exc_info=exc)
                    await asyncio.sleep(self.cfg.retry)
                    continue
                self._set_shared()
            self._loops = loops = [asyncio.ensure_future(c) for c in (
                self._reader(), self._publisher(), self._leaseholder(), self._housekeeping())]
            try:
                done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                self._loops = []
            if self.mode == SHARED:  # a loop failed (else something else found Redis gone and stopped them)
                error: BaseException = RuntimeError("a fleet loop ended")
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        error = task.exception()  # type: ignore[assignment]
                if not isinstance(error, FLEET_ERRORS):
                    log.error("fleet: internal error (%s); going on alone and trying Redis again", _words(error),
                              exc_info=error)
                self._go_local(error)
            await asyncio.sleep(self.cfg.retry)


class FleetBehind(Exception):
    """Redis answers, but this daemon's outcomes do not come back in time: it goes on alone."""


def _words(exc: BaseException) -> str:
    """An error in a few words, never a URL or a password (redis-py's messages name host and port only)."""
    text = str(exc).strip()
    name = type(exc).__name__
    if not text or isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"{name}: no answer in time" if "Timeout" in name else name
    return f"{name}: {text[:200]}"


def _silence(raw: bytes) -> Silence | None:
    try:
        data = json.loads(raw)
        return Silence(tuple(Matcher.parse(m) for m in data["matchers"]), float(data["starts_at"]),
                       float(data["ends_at"]), str(data.get("comment", ""))[:500], str(data.get("author", ""))[:100],
                       float(data.get("created_at", 0.0)), str(data["id"])[:40])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
