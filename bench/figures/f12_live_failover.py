"""12. Live failover: SIGKILL the leader while series go late; LATE still arrives.

Three replicas with election, ``live_series`` 1s series fed live
(LIVE_POLL_INTERVAL=1). Per trial: a subscriber on a follower, every series
LIVE there; ``live_stopped`` series stop and the leader is SIGKILLed at once
(before their LATE is due, so only the next leader can store it). LIVE_MODE=auto
(change streams on SecantusDB; see figure 10 for poll mode there). Measured per
series: the subscriber's receipt of its first LATE minus the later of the kill
and the series' due time (first missing close + grace). The dead replica is
replaced before the next trial.
"""

from __future__ import annotations

import math
import signal
from typing import Any

from bench import cluster, live
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, result
from bench.procs import Replica
from bench.stats import latency_ms, percentile, rounded

KEY = "live_failover"
TITLE = "Live failover (LATE after the leader is SIGKILLed)"
TARGET = "max, SIGKILL of the leader → LATE at a follower's subscriber <= lease + heartbeat + 1.5 s"


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("live_failover")
    syms = live.symbols(sz.live_series, prefix="F")
    feed = live.Feed(ctx.client[name], syms)
    await feed.prime(5)
    feed.start()
    env = {**cluster.election_env(ctx, syms[0]), **live.live_env(syms, "auto", 1.0)}
    counter = 3
    latencies: list[float] = []
    from_kill: list[float] = []
    received = 0
    expected = 0
    try:
        replicas = [await ctx.replica(f"lf{i}", name, **env) for i in (1, 2, 3)]
        for trial in range(sz.live_failover_trials):
            leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
            follower = next(r for r in replicas if r is not leader)
            watch = live.LateWatch(follower.stub)
            watch.start()
            try:
                fed = set(feed.active)
                if not await watch.until(lambda w=watch, f=fed: f <= w.live, 120):
                    raise NotMeasured(f"trial {trial}: fed series not LIVE on {follower.name}")
                batch = sorted(fed)[: sz.live_stopped]
                for sym in batch:
                    watch.expect[sym] = await feed.stop(sym)
                leader.signal(signal.SIGKILL)
                killed = live.now_ms()
                expected += len(batch)
                within = sz.election_timeout + sz.heartbeat + 30
                await watch.until(lambda w=watch, b=batch: len(w.arrived) == len(b), within)
                received += len(watch.arrived)
                for sym, at in watch.arrived.items():
                    latencies.append((at - max(killed, live.due_ms(watch.expect[sym]))) / 1000)
                    from_kill.append((at - killed) / 1000)
            finally:
                await watch.close()
            await leader.close()
            counter += 1
            fresh: Replica = await ctx.replica(f"lf{counter}", name, **env)
            replicas = [r for r in replicas if r is not leader] + [fresh]
            if not feed.active:
                raise NotMeasured("every series was stopped: raise live_series")
    finally:
        await feed.close()
    limit = sz.election_timeout + sz.heartbeat + 1.5
    worst = max(latencies) if received == expected and latencies else math.nan
    return result(
        target=TARGET,
        summary=(
            f"{received}/{expected} LATE received; worst {worst:.2f} s after max(kill, due) "
            f"(limit {limit:g}); p99 from the kill {percentile(from_kill, 99):.2f} s; "
            f"heartbeat {sz.heartbeat:g} s, lease {sz.election_timeout:g} s"
        ),
        verdict=MET if not math.isnan(worst) and worst <= limit else MISSED,
        ratio=worst / limit,
        ratio_of="worst latency / limit",
        details={
            "after_kill_or_due": latency_ms(latencies),
            "after_kill": latency_ms(from_kill),
            "limit_s": limit,
            "worst_s": rounded(worst),
            "trials": sz.live_failover_trials,
            "stopped_per_trial": sz.live_stopped,
            "feed_ticks_written_after_grace": feed.late_writes,
        },
    )
