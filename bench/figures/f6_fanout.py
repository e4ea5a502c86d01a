"""6. Stream fan-out: ``subscribers`` StreamHealthScores streams on one follower.

The streams share ``stream_channels`` channels (separate TCP connections). After
every stream has its snapshot, a priming cycle checks that all are live; then
each measured cycle is a RunAudit on the leader, and a subscriber's latency is
its arrival time minus the score's ``computed_at`` (the leader's clock on the
same machine). Reported: p50/p99/max over subscribers (median over cycles),
subscribers that missed a cycle, and the follower's RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from bench import cluster
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, ms, result
from bench.rss import PeakRSS, rss_mb
from bench.stats import median, percentile, rounded

KEY = "stream_fanout"
TITLE = "Stream fan-out (StreamHealthScores)"
TARGET = "p99 from computed_at to a subscriber's receipt <= 1 s, no subscriber missing a cycle"
SYMBOL = "STRMUSDT"
P99_S = 1.0


class Subscribers:
    """Arrival times (wall clock, s) of every score, by cycle_id, per subscriber."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrivals: dict[str, dict[int, float]] = defaultdict(dict)
        self.snapshots = 0
        self.failures: list[str] = []
        self._changed = asyncio.Event()

    def record(self, idx: int, score: Any) -> None:
        per_cycle = self.arrivals[score.cycle_id]
        if idx not in per_cycle:
            per_cycle[idx] = time.time()
        self._changed.set()

    async def until(self, check: Any, within: float) -> bool:
        deadline = time.monotonic() + within
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True

    def got(self, cycle_id: str) -> int:
        return len(self.arrivals.get(cycle_id, {}))


async def subscribe(stub: Any, idx: int, subs: Subscribers, first: asyncio.Event) -> None:
    call = stub.StreamHealthScores(pb.StreamHealthScoresRequest(symbols=[SYMBOL]))
    try:
        async for reply in call:
            if not first.is_set():
                first.set()
                subs.snapshots += 1
            subs.record(idx, reply.score)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            subs.failures.append(f"{exc.code().name}: {exc.details()}")
    finally:
        call.cancel()


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("fanout")
    # A live audit: only those reach the stream (a historical window is a report).
    req = await cluster.seed_tiny(ctx, name, SYMBOL, live=True)
    replicas = await cluster.start(ctx, name, ["fo1", "fo2"], SYMBOL)
    leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
    follower = next(r for r in replicas if r is not leader)
    await leader.stub.RunAudit(req, timeout=30)  # a stored score for the snapshot

    idle_mb = rss_mb(follower.pid)
    channels = [
        grpc.aio.insecure_channel(
            follower.target,
            options=[("grpc.use_local_subchannel_pool", 1), ("bench.channel", i)],
        )
        for i in range(sz.stream_channels)
    ]
    subs = Subscribers(sz.subscribers)
    firsts = [asyncio.Event() for _ in range(sz.subscribers)]
    tasks: list[asyncio.Task[None]] = []
    cycles: list[dict[str, Any]] = []
    settle = max(30.0, sz.subscribers / 20)
    try:
        with PeakRSS(follower.pid, interval=0.01) as peak:
            began = time.perf_counter()
            for i in range(sz.subscribers):
                stub = pb_grpc.AuditServiceStub(channels[i % len(channels)])
                tasks.append(asyncio.create_task(subscribe(stub, i, subs, firsts[i])))
            await subs.until(lambda: subs.snapshots >= sz.subscribers, settle)
            subscribed_s = time.perf_counter() - began
            if subs.snapshots < sz.subscribers:
                raise NotMeasured(
                    f"only {subs.snapshots}/{sz.subscribers} streams got their snapshot "
                    f"within {settle:g} s ({'; '.join(subs.failures[:3])})"
                )
            subscribed_mb = rss_mb(follower.pid)
            # Priming cycle: every stream must be watching before we measure.
            priming = await leader.stub.RunAudit(req, timeout=30)
            cid = priming.cycle.cycle_id
            await subs.until(lambda: subs.got(cid) >= sz.subscribers, settle)
            primed = subs.got(cid)
            for _ in range(sz.stream_cycles):
                reply = await leader.stub.RunAudit(req, timeout=30)
                cycle = reply.cycle
                computed = ms(cycle.series[0].health.computed_at) / 1000
                await subs.until(lambda c=cycle.cycle_id: subs.got(c) >= sz.subscribers, settle)
                lat = [t - computed for t in subs.arrivals[cycle.cycle_id].values()]
                cycles.append(
                    {
                        "received": len(lat),
                        "p50_s": rounded(percentile(lat, 50), 4),
                        "p99_s": rounded(percentile(lat, 99), 4),
                        "max_s": rounded(max(lat, default=float("nan")), 4),
                    }
                )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()

    p50 = median([c["p50_s"] for c in cycles])
    p99 = median([c["p99_s"] for c in cycles])
    worst = max(c["max_s"] for c in cycles)
    missing = sum(sz.subscribers - c["received"] for c in cycles)
    ok = p99 <= P99_S and missing == 0
    return result(
        target=TARGET,
        summary=(
            f"{sz.subscribers:,} streams on {sz.stream_channels} channels: "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, last {worst * 1000:.0f} ms; "
            f"{missing} missed; follower RSS {idle_mb:.0f} → {peak.peak_mb:.0f} MB"
        ),
        verdict=MET if ok else MISSED,
        ratio=p99 / P99_S,
        ratio_of="p99 / 1 s target",
        details={
            "p50_ms": rounded(p50 * 1000, 1),
            "p99_ms": rounded(p99 * 1000, 1),
            "max_ms": rounded(worst * 1000, 1),
            "cycles": cycles,
            "missed_deliveries": missing,
            "primed": f"{primed}/{sz.subscribers}",
            "subscribe_seconds": rounded(subscribed_s, 2),
            "follower_rss_idle_mb": rounded(idle_mb, 1),
            "follower_rss_subscribed_mb": rounded(subscribed_mb, 1),
            "follower_rss_peak_mb": rounded(peak.peak_mb, 1),
            "stream_errors": subs.failures[:5],
        },
    )
