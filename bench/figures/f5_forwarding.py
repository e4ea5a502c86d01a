"""5. Forwarding: RunAudit sent to a follower vs to the leader, and pooled connections.

Two replicas with ENABLE_LEADER_ELECTION=true share one database. A tiny
series (60 x 1m) keeps the audit itself cheap so the hop is what is measured.
Latency: per trial, ``forward_latency_calls`` sequential calls to each side.
Connections: ESTABLISHED TCP connections from the follower's pid to the
leader's gRPC port before, during (max of samples) and after
``forward_calls`` forwarded calls; the follower's
``auditsvc_forwarded_calls_total`` counter is read from its /metrics.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from typing import Any

import grpc

from bench import cluster
from bench.context import Context
from bench.figures.common import MET, MISSED, result
from bench.rss import established_to
from bench.stats import latency_ms, median, percentile, ratio, rounded

KEY = "forwarding"
TITLE = "Forwarding (follower → leader)"
TARGET = "p50 via follower / p50 at leader <= 1.5; leader connections flat across the calls"
SYMBOL = "FWDUSDT"
IN_FLIGHT = 10


def forwarded_ok(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    pattern = r'^auditsvc_forwarded_calls_total\{method="RunAudit",outcome="OK"\} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def sequential(stub: Any, req: Any, n: int) -> tuple[list[float], set[str]]:
    took: list[float] = []
    served: set[str] = set()
    for _ in range(n):
        began = time.perf_counter()
        reply = await stub.RunAudit(req, timeout=30)
        took.append(time.perf_counter() - began)
        served.add(reply.cycle.served_by)
    return took, served


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("forwarding")
    req = await cluster.seed_tiny(ctx, name, SYMBOL)
    replicas = await cluster.start(ctx, name, ["fw1", "fw2"], SYMBOL)
    leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
    follower = next(r for r in replicas if r is not leader)
    await cluster.until_forwarding(follower, leader, req, cluster.settle_time(ctx))
    await sequential(leader.stub, req, 3)  # warm-up of the direct path

    p50: dict[str, list[float]] = {"leader": [], "follower": []}
    all_took: dict[str, list[float]] = {"leader": [], "follower": []}
    served: set[str] = set()
    for trial in range(sz.trials):
        order = ("leader", "follower") if trial % 2 == 0 else ("follower", "leader")
        for side in order:
            stub = leader.stub if side == "leader" else follower.stub
            took, by = await sequential(stub, req, sz.forward_latency_calls)
            served |= by
            p50[side].append(percentile(took, 50))
            all_took[side].extend(took)
    r = ratio(median(p50["follower"]), median(p50["leader"]))

    # Connections across forward_calls calls, IN_FLIGHT at a time.
    before = established_to(follower.pid, leader.port)
    counted_before = forwarded_ok(follower.metrics_port)
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(await asyncio.to_thread(established_to, follower.pid, leader.port))
            await asyncio.sleep(0.05)

    errors = 0
    queue = iter(range(sz.forward_calls))

    async def worker() -> None:
        nonlocal errors
        for _ in queue:
            try:
                reply = await follower.stub.RunAudit(req, timeout=30)
                served.add(reply.cycle.served_by)
            except grpc.aio.AioRpcError:
                errors += 1

    sampler = asyncio.create_task(sample())
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    burst_s = time.perf_counter() - began
    done.set()
    await sampler
    after = established_to(follower.pid, leader.port)
    counted = forwarded_ok(follower.metrics_port) - counted_before
    flat = after == before and max(samples, default=before) <= max(before, 1)
    ok = r <= 1.5 and flat and errors == 0 and served == {leader.name}
    return result(
        target=TARGET,
        summary=(
            f"p50 {median(p50['follower']) * 1000:.1f} ms via follower vs "
            f"{median(p50['leader']) * 1000:.1f} ms at leader; connections to leader "
            f"{before} before, max {max(samples, default=before)} during, {after} after "
            f"{sz.forward_calls:,} calls"
        ),
        verdict=MET if ok else MISSED,
        ratio=r,
        ratio_of="p50 via follower / p50 at leader (median of trials)",
        details={
            "leader_ms": latency_ms(all_took["leader"]),
            "follower_ms": latency_ms(all_took["follower"]),
            "p50_ms_per_trial": {k: [rounded(x * 1000, 2) for x in v] for k, v in p50.items()},
            "connections_before": before,
            "connections_max_during": max(samples, default=before),
            "connections_after": after,
            "connection_samples": len(samples),
            "calls": sz.forward_calls,
            "in_flight": IN_FLIGHT,
            "calls_per_s": round(sz.forward_calls / burst_s, 1),
            "errors": errors,
            "forwarded_ok_metric_delta": counted,
            "served_by": sorted(served),
        },
    )
