"""11. Live-tail cost: leader CPU while tailing many 1s series, and poll queries.

Per mode (poll, change_stream): one standalone replica (it leads) tails
``live_cost_series[-1]`` 1s series sharing ``klines_1s`` while the feed inserts
one candle per series per second. Leader CPU is the replica's user + system
CPU time over ``live_cost_seconds`` after a warm-up, in cores, at the default
AUDIT_INGEST_GRACE (10 s; see GRACE_S). In poll mode the
database's query + getMore opcounters are also read over the same span for
each series count in ``live_cost_series``: with symbols sharing a collection
they should not grow with the count.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import psutil

from bench import live
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, result
from bench.stats import rounded

KEY = "live_cost"
TITLE = "Live-tail cost (leader CPU, poll queries)"
TARGET = (
    "leader CPU <= 0.5 core tailing the largest count of 1s series at one insert per "
    "series per second, each mode; poll-mode queries/s flat across series counts (<= 1.2x)"
)
CPU_LIMIT = 0.5
# The default AUDIT_INGEST_GRACE: this figure is the tail's steady cost, not its
# detection latency (figure 10's 1 s grace). At 1,000 inserts/s SecantusDB takes
# about 0.5 s per insert_many of one tick, and with a 1 s grace every series
# went LATE while the leader took office, after which storing a LATE score per
# series per second kept the database too busy to catch up.
GRACE_S = 10.0
QUERY_GROWTH_LIMIT = 1.2
WARMUP_S = 3.0
ALL_LIVE_WITHIN_S = 120.0


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    cpu: dict[str, float] = {}
    takeover: dict[str, float] = {}
    missing: dict[str, str] = {}
    queries: dict[int, float] = {}
    writes_after_grace: dict[str, int] = {}
    for mode in ("poll", "change_stream"):
        counts = sz.live_cost_series if mode == "poll" else sz.live_cost_series[-1:]
        for n in counts:
            try:
                used, qps, late, ready = await _measure(ctx, mode, n)
            except NotMeasured as exc:
                missing[f"{mode}@{n}"] = str(exc)
                used, qps, late, ready = math.nan, math.nan, -1, math.nan
            if n == sz.live_cost_series[-1]:
                cpu[mode] = used
                takeover[mode] = ready
                writes_after_grace[mode] = late
            if mode == "poll":
                queries[n] = qps
            await ctx.cleanup()
    small, big = queries[sz.live_cost_series[0]], queries[sz.live_cost_series[-1]]
    growth = big / small if small else math.nan
    worst_cpu = math.nan if any(math.isnan(c) for c in cpu.values()) else max(cpu.values())
    ok = (
        not math.isnan(worst_cpu)
        and worst_cpu <= CPU_LIMIT
        and not math.isnan(growth)
        and growth <= QUERY_GROWTH_LIMIT
    )
    n_big = sz.live_cost_series[-1]
    return result(
        target=TARGET,
        summary=(
            f"{n_big} series: leader CPU poll {cpu['poll']:.2f} core, change_stream "
            f"{cpu['change_stream']:.2f} core; poll queries/s "
            + ", ".join(f"{q:.1f} @{n}" for n, q in queries.items())
        ),
        verdict=MET if ok else MISSED,
        ratio=max(worst_cpu / CPU_LIMIT, growth / QUERY_GROWTH_LIMIT),
        ratio_of="worse of CPU / 0.5 core and query growth / 1.2",
        details={
            "leader_cpu_cores": {m: rounded(c) for m, c in cpu.items()},
            "poll_queries_per_s": {str(n): rounded(q) for n, q in queries.items()},
            "poll_query_growth": rounded(growth),
            "seconds_until_all_stored_live": {m: rounded(t) for m, t in takeover.items()},
            "seconds_measured": sz.live_cost_seconds,
            "feed_ticks_written_after_grace": writes_after_grace,
            "not_measured": missing,
        },
    )


async def _measure(ctx: Context, mode: str, n: int) -> tuple[float, float, int, float]:
    """(leader CPU cores, database queries/s, feed ticks written late, seconds from
    readiness until every series was stored LIVE) for one run, measured in steady
    state: after the leader has stored every series LIVE, plus a warm-up."""
    name = ctx.database(f"cost_{mode}_{n}")
    syms = live.symbols(n, prefix="C")
    feed = live.Feed(ctx.client[name], syms)
    await feed.prime(3)
    feed.start()
    try:
        env = {**live.live_env(syms, mode, 1.0), "AUDIT_INGEST_GRACE": f"{GRACE_S:g}"}
        replica = await ctx.replica(f"cost-{mode}-{n}", name, **env)
        try:
            ready = await live.until_all_live(replica.stub, n, ALL_LIVE_WITHIN_S)
        except TimeoutError as exc:
            raise NotMeasured(f"{mode}, {n} series: {exc}") from None
        # Never longer than the measurement itself (the smoke test's tiny sizes).
        await asyncio.sleep(min(WARMUP_S, ctx.sizes.live_cost_seconds))
        proc = psutil.Process(replica.pid)
        admin = ctx.client.admin
        before_cpu = proc.cpu_times()
        before_ops = (await admin.command("serverStatus"))["opcounters"]
        began = asyncio.get_running_loop().time()
        await asyncio.sleep(ctx.sizes.live_cost_seconds)
        after_ops = (await admin.command("serverStatus"))["opcounters"]
        after_cpu = proc.cpu_times()
        span = asyncio.get_running_loop().time() - began
        used = (after_cpu.user + after_cpu.system - before_cpu.user - before_cpu.system) / span
        reads = sum(after_ops[k] - before_ops[k] for k in ("query", "getmore"))
        return used, reads / span, feed.late_writes, ready
    finally:
        await feed.close()
