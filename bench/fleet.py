"""The fleet (issue 16): two daemons sharing one Redis on this machine, and what Redis holds per number.

A real ``redis-server`` (the Debian package) is started on a free loopback port in a temporary directory,
without persistence (``--save "" --appendonly no``), and stopped at the end. Without the binary the
figures are skipped (``fleet_skipped`` says why) and no target depends on them.

**Throughput** (``measure``): two ``FleetNode``\\ s, daemons ``a`` and ``b``, in this one process and one event
loop, each with its own ``Pipeline`` built as the daemon builds it (the bundled rules, the default
thresholds and alerting, no store), sharing the Redis. ``calls`` outcomes of the realistic mix
(``outcomes.outcome_cycle``: ``NUMBERS`` calling numbers, 4 trunks, 200 calls/s of event time) are
classified and ``submit``-ted, half through ``a`` (connector ``pbx-a``), half through ``b`` (``pbx-b``),
alternately in slices of ``SLICE``, as two PBXes would hand them over. The clock stops when *both*
pipelines have processed all ``calls`` outcomes: every daemon counts the whole fleet's calls, so that is
``2 x calls`` ``Pipeline.process`` calls, plus the wire (encode, the ``PUBLISH`` script, ``XREAD``, decode
twice). ``fleet_outcomes_per_s`` = calls / seconds.

The baseline, run just before each fleet repetition on the same outcomes: one daemon alone, no Redis
(classify + ``Pipeline.process``, what ``Daemon._process`` does without ``fleet:``).
``fleet_cost_vs_alone`` = alone rate / fleet rate, the median of the per-repetition ratios: how many
times one daemon's work an outcome costs this process when it hosts both daemons. **2.0 is the floor**
(each outcome is judged by two pipelines); what is above 2 is the wire. Redis runs in its own process
(the second core); its CPU per outcome comes from ``INFO cpu`` (``fleet_redis_cpu_us_per_outcome``).
Redis is flushed and both nodes built afresh between repetitions.

**Memory** (``measure_memory``): ``numbers x calls_per_number`` outcomes of the same mix (realistic call ids:
UUIDs and Asterisk ``<epoch>.<seq>``, E.164 numbers, the mix's 603s with a ``Reason`` header and redress)
published through a ``FleetNode``'s ``PUBLISH`` path (``FleetNode._publish_all``, batches of
``PUBLISH_BATCH``: the publisher loop without the reader); ``used_memory`` of ``INFO memory`` before and
after. Each call is one stream entry plus one dedup key (``<prefix>:seen:<connector>/<call id>``, ``PX`` the
retention). Both live as long as the longest window (+60 s): the stream is trimmed by ``MINID`` on every
append and the keys expire, so Redis holds the calls of the last window, whatever the number of distinct
numbers: ``bytes per call x calls per window``. The bench publishes everything within seconds, so
nothing is trimmed and every published call is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bench.outcomes import outcome_cycle, scenario_templates
from blockradar.classification import Classification
from blockradar.config import FleetConfig
from blockradar.detect.pipeline import Pipeline
from blockradar.fleet.node import FleetNode
from blockradar.fleet.wire import call_key, encode
from blockradar.outcome import CallOutcome
from blockradar.ruleset import RuleSet, load_ruleset
from blockradar.testing.redis_server import RedisServer, redis_binary

CALLS = 20_000  # outcomes per throughput repetition (--quick; the full run: 50,000)
NUMBERS = 10_000  # calling numbers of the throughput stream (the engine figure has the 100k-key case)
SLICE = 100  # outcomes submitted to one node before the other's turn (and a turn of the loop)
MEMORY_NUMBERS = 100_000
MEMORY_CALLS_PER_NUMBER = 10  # the second memory case: 10 calls each for MEMORY_NUMBERS / 10 numbers
SKIPPED = "skipped: redis-server not installed"
WAIT_S = 120.0  # a fleet repetition that takes longer is broken, not slow


def _config(url: str, name: str) -> FleetConfig:
    return FleetConfig.model_validate({"redis": url, "name": name})


def _retention_s(pipeline: Pipeline) -> float:
    """What the daemon gives its node (``Daemon._history_s``): the longest window."""
    return max((t.window for t in pipeline.thresholds), default=3600.0)


def realistic(outcomes: Sequence[CallOutcome] | Any, connector: str, seed: int) -> list[CallOutcome]:
    """The outcomes with this daemon's connector name and call ids as the PBX makes them: FreeSWITCH's
    channel UUID, Asterisk's ``<epoch>.<sequence>`` linkedid."""
    rng = random.Random(seed)
    out = []
    for n, outcome in enumerate(outcomes):
        if outcome.pbx == "freeswitch":
            call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        else:
            call_id = f"{int(outcome.ended_at or 0)}.{n}"
        out.append(outcome.replace(connector=connector, call_id=call_id))
    return out


# -- throughput ---------------------------------------------------------------------------------------------

def _alone(ruleset: RuleSet, outcomes: Sequence[CallOutcome]) -> float:
    """Seconds for one daemon without a fleet: classify + process each outcome."""
    pipeline = Pipeline(ruleset, None)
    classify, process = ruleset.classify, pipeline.process
    gc.collect()
    started = time.perf_counter()
    for outcome in outcomes:
        process(outcome, classify(outcome))
    return time.perf_counter() - started


async def _fleet(url: str, ruleset: RuleSet, feeds: tuple[list[CallOutcome], list[CallOutcome]]) -> dict[str, Any]:
    """One repetition: two nodes, each fed its half, until both pipelines have judged every outcome."""
    total = sum(len(f) for f in feeds)
    loop = asyncio.get_running_loop()
    nodes: list[FleetNode] = []
    pipelines: list[Pipeline] = []
    done: list[asyncio.Future[float]] = []
    for name in ("a", "b"):
        pipeline = Pipeline(ruleset, None)
        finished: asyncio.Future[float] = loop.create_future()
        process = pipeline.process

        def judge(outcome: CallOutcome, cls: Classification, process: Any = process, pipeline: Pipeline = pipeline,
                  finished: asyncio.Future[float] = finished) -> None:
            process(outcome, cls)
            if pipeline.processed == total and not finished.done():
                finished.set_result(time.perf_counter())

        node = FleetNode(_config(url, name), member=name, retention_s=_retention_s(pipeline), judge=judge)
        if not await node.join([]):
            raise RuntimeError(f"fleet node {name} could not join the bench's Redis: {node.error}")
        node.start()
        nodes.append(node)
        pipelines.append(pipeline)
        done.append(finished)
    classify = ruleset.classify
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    try:
        half = max(len(f) for f in feeds)
        for i in range(0, half, SLICE):
            for node, feed in zip(nodes, feeds, strict=True):
                submit = node.submit
                for outcome in feed[i:i + SLICE]:
                    submit(outcome, classify(outcome))
            await asyncio.sleep(0)
        ends = await asyncio.wait_for(asyncio.gather(*done), WAIT_S)
        elapsed = max(ends) - started
        cpu = time.process_time() - cpu
    finally:
        for node in nodes:
            await node.stop()
    stats = [node.stats for node in nodes]
    return {"seconds": elapsed, "daemon_cpu_s": cpu, "processed": [p.processed for p in pipelines],
            "published": sum(s["published"] for s in stats), "outages": sum(s["outages"] for s in stats),
            "bad": sum(s["bad"] for s in stats)}


def _throughput(redis: RedisServer, calls: int, repeats: int, progress: Callable[[str], None]) -> dict[str, Any]:
    ruleset = load_ruleset(["default"])
    base = list(outcome_cycle(calls, NUMBERS, templates=scenario_templates()))
    feeds = (realistic(base[0::2], "pbx-a", 1), realistic(base[1::2], "pbx-b", 2))
    merged = [o for pair in zip(*feeds, strict=False) for o in pair] + feeds[0][len(feeds[1]):]
    client = redis.client()
    alone_rates: list[float] = []
    fleet_rates: list[float] = []
    redis_cpu: list[float] = []
    daemon_cpu: list[float] = []
    outages = bad = 0
    gc.freeze()  # the input is the benchmark's: keep it out of the collector's walks
    try:
        for i in range(repeats):
            alone_s = _alone(ruleset, merged)
            client.flushdb()
            redis_before = redis.cpu_s()
            run = asyncio.run(_fleet(redis.url, ruleset, feeds))
            redis_cpu.append((redis.cpu_s() - redis_before) / calls * 1e6)
            if run["processed"] != [calls, calls] or run["published"] != calls:
                raise RuntimeError(f"fleet: processed {run['processed']}, published {run['published']} of {calls}")
            outages += run["outages"]
            bad += run["bad"]
            alone_rates.append(calls / alone_s)
            fleet_rates.append(calls / run["seconds"])
            daemon_cpu.append(run["daemon_cpu_s"] / calls / 2 * 1e6)
            progress(f"fleet {i + 1}/{repeats}: {calls:,} outcomes through 2 daemons in {run['seconds'] * 1000:.0f} ms "
                     f"({fleet_rates[-1]:,.0f}/s; alone {alone_rates[-1]:,.0f}/s, "
                     f"{alone_rates[-1] / fleet_rates[-1]:.2f}x), Redis {redis_cpu[-1]:.1f} us CPU/outcome")
    finally:
        gc.unfreeze()
        client.flushdb()
        client.close()
    return {"calls": calls, "fleet": fleet_rates, "alone": alone_rates, "redis_cpu_us": redis_cpu,
            "daemon_cpu_us": daemon_cpu, "outages": outages, "bad": bad}


# -- memory -------------------------------------------------------------------------------------------------

async def _publish(url: str, items: list[tuple[str, bytes]], retention_s: float) -> FleetNode:
    node = FleetNode(_config(url, "mem"), member="mem", retention_s=retention_s, judge=lambda o, c: None)
    if not await node.join([]):
        raise RuntimeError(f"fleet node could not join the bench's Redis: {node.error}")
    try:
        results = await node._publish_all(items)  # the publisher loop's own call, without the reader
    finally:
        await node.stop()
    if not all(results):
        raise RuntimeError(f"fleet memory: {results.count(False)} of {len(items)} calls taken for duplicates")
    return node


def _memory_case(redis: RedisServer, numbers: int, per_number: int, ruleset: RuleSet) -> dict[str, Any]:
    calls = numbers * per_number
    outcomes = realistic(outcome_cycle(calls, numbers, templates=scenario_templates(), seed=5), "pbx-a", 3)
    classify = ruleset.classify
    items = [(call_key(o), encode(o, classify(o))) for o in outcomes]
    payload = sum(len(p) for _, p in items) / len(items)
    del outcomes
    client = redis.client()
    try:
        client.flushdb()
        before = redis.used_memory()
        node = asyncio.run(_publish(redis.url, items, _retention_s(Pipeline(ruleset, None))))
        after = redis.used_memory()
        entries = int(client.xlen(node.k_stream))
        keys = int(client.dbsize())
        stream = int(client.memory_usage(node.k_stream, samples=0) or 0)
        seen = int(client.memory_usage(node._seen_key(items[0][0])) or 0)
        client.flushdb()
    finally:
        client.close()
    grown = after - before
    return {"calls": calls, "numbers": numbers, "entries": entries, "keys": keys, "bytes": grown,
            "bytes_per_call": grown / calls, "bytes_per_number": grown / numbers, "payload": payload,
            "stream_per_call": stream / entries if entries else float("nan"), "seen_key": seen}


def _memory(redis: RedisServer, numbers: int, progress: Callable[[str], None]) -> dict[str, Any]:
    ruleset = load_ruleset(["default"])
    one = _memory_case(redis, numbers, 1, ruleset)
    progress(f"fleet memory: {one['calls']:,} calls of {one['numbers']:,} numbers: "
             f"{one['bytes'] / 1e6:.1f} MB in Redis, {one['bytes_per_number']:.0f} B/number "
             f"(stream {one['stream_per_call']:.0f} B/entry for {one['payload']:.0f} B of JSON, seen key "
             f"{one['seen_key']} B)")
    many = _memory_case(redis, max(1, numbers // MEMORY_CALLS_PER_NUMBER), MEMORY_CALLS_PER_NUMBER, ruleset)
    progress(f"fleet memory: {many['calls']:,} calls of {many['numbers']:,} numbers: "
             f"{many['bytes'] / 1e6:.1f} MB, {many['bytes_per_call']:.0f} B/call, "
             f"{many['bytes_per_number']:.0f} B/number")
    return {"one": one, "many": many}


@contextlib.contextmanager
def _quiet() -> Any:
    """The nodes' "now sends the fleet's notifications" lines would interleave with the progress lines."""
    logger = logging.getLogger("blockradar.fleet")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def measure(calls: int, repeats: int, progress: Callable[[str], None] = lambda _: None,
            memory_numbers: int = MEMORY_NUMBERS) -> dict[str, Any]:
    """Throughput (``calls`` outcomes, ``repeats`` times) and memory (``memory_numbers`` numbers, one call each;
    then a tenth of them, ten calls each). ``{"skipped": reason}`` without ``redis-server``."""
    binary = redis_binary()
    if binary is None:
        progress(f"fleet: {SKIPPED}")
        return {"skipped": SKIPPED}
    with RedisServer(binary) as redis, _quiet():
        version = redis.info("server").get("redis_version", "?")
        progress(f"fleet: redis-server {version} on 127.0.0.1:{redis.port}, two daemons, {calls:,} outcomes")
        out = _throughput(redis, calls, repeats, progress)
        out["memory"] = _memory(redis, memory_numbers, progress)
        out["redis_version"] = version
    return out
