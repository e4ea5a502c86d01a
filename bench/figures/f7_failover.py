"""7. Failover: SIGKILL or SIGTERM the leader; time until the survivor serves a RunAudit.

Two replicas (heartbeat and lease from ``--heartbeat``/``--election-timeout``).
Per trial: wait for one leader and working forwarding, wait a random part of a
heartbeat (so the kill lands anywhere in the renewal period), signal the
leader, then call RunAudit on the survivor every 20 ms until it answers served
by itself. The dead replica is replaced by a fresh one before the next trial.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from typing import Any

import grpc

from bench import cluster
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, result
from bench.procs import Replica
from bench.stats import median, rounded

KEY = "failover"
TITLE = "Failover (leader killed or stopped)"
TARGET = (
    "median SIGKILL → served <= lease + heartbeat + 0.5 s; SIGTERM → served <= heartbeat + 0.5 s"
)
SYMBOL = "FOVUSDT"


async def served_by_survivor(survivor: Replica, req: Any, within: float) -> tuple[float, int]:
    began = time.perf_counter()
    attempts = 0
    while time.perf_counter() - began < within:
        attempts += 1
        try:
            reply = await survivor.stub.RunAudit(req, timeout=1.0)
            if reply.cycle.served_by == survivor.name:
                return time.perf_counter() - began, attempts
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.02)
    raise NotMeasured(f"failover: {survivor.name} did not serve RunAudit within {within:g} s")


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("failover")
    req = await cluster.seed_tiny(ctx, name, SYMBOL)
    rng = random.Random(7)
    counter = 2
    replicas = await cluster.start(ctx, name, ["fa1", "fa2"], SYMBOL)
    within = 3 * (sz.election_timeout + sz.heartbeat) + 10
    times: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    exits: list[int | None] = []
    attempts: dict[str, list[int]] = {"SIGKILL": [], "SIGTERM": []}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for _ in range(sz.failover_trials):
            leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
            survivor = next(r for r in replicas if r is not leader)
            await cluster.until_forwarding(survivor, leader, req, cluster.settle_time(ctx))
            await asyncio.sleep(rng.uniform(0, sz.heartbeat))
            # perf_counter starts inside served_by_survivor right after the signal.
            leader.signal(sig)
            took, n = await served_by_survivor(survivor, req, within)
            times[sig.name].append(took)
            attempts[sig.name].append(n)
            if sig is signal.SIGTERM:
                assert leader.proc is not None
                try:
                    exits.append(await asyncio.to_thread(leader.proc.wait, 30))
                except subprocess.TimeoutExpired:
                    exits.append(None)
            await leader.close()
            counter += 1
            env = cluster.election_env(ctx, SYMBOL)
            fresh = await ctx.replica(f"fa{counter}", name, **env)
            replicas = [survivor, fresh]
    kill, term = median(times["SIGKILL"]), median(times["SIGTERM"])
    kill_limit = sz.election_timeout + sz.heartbeat + 0.5
    term_limit = sz.heartbeat + 0.5
    ok = kill <= kill_limit and term <= term_limit
    return result(
        target=TARGET,
        summary=(
            f"SIGKILL → served {kill:.2f} s (limit {kill_limit:g}); SIGTERM → served "
            f"{term:.2f} s (limit {term_limit:g}); heartbeat {sz.heartbeat:g} s, "
            f"lease {sz.election_timeout:g} s"
        ),
        verdict=MET if ok else MISSED,
        ratio=max(kill / kill_limit, term / term_limit),
        ratio_of="median time / limit (worse of the two)",
        details={
            "sigkill_seconds": [rounded(x) for x in times["SIGKILL"]],
            "sigterm_seconds": [rounded(x) for x in times["SIGTERM"]],
            "sigkill_median_s": rounded(kill),
            "sigterm_median_s": rounded(term),
            "sigkill_limit_s": kill_limit,
            "sigterm_limit_s": term_limit,
            "attempts": attempts,
            "sigterm_exit_codes": exits,
            "trials_per_kind": sz.failover_trials,
        },
    )
