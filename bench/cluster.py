"""Replicas with leader election on: start, find the leader, wait until forwarding works.

Failures here are reported as ``NotMeasured`` naming the election or
forwarding step, so that figures 5-7 say why instead of crashing the run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from bench import seed
from bench.context import Context, NotMeasured
from bench.figures.common import audit_request
from bench.procs import Replica

TIMEFRAME = "1m"
SLOTS = 60


def election_env(ctx: Context, symbol: str) -> dict[str, str]:
    return {
        "ENABLE_LEADER_ELECTION": "true",
        "LEADER_ELECTION_HEARTBEAT_INTERVAL": f"{ctx.sizes.heartbeat:g}",
        "LEADER_ELECTION_TIMEOUT": f"{ctx.sizes.election_timeout:g}",
        "AUDIT_SYMBOLS": symbol,
        "AUDIT_TIMEFRAMES": TIMEFRAME,
    }


async def seed_tiny(
    ctx: Context, database: str, symbol: str, *, live: bool = False
) -> pb.RunAuditRequest:
    """A tiny demo series (60 x 1m) and the RunAudit request covering it.

    ``live``: the series ends now and the request gives only ``start_time``, so the
    audit is live and its score reaches StreamHealthScores; otherwise the series
    ends at a fixed past instant and the audit is a report (no stream message).
    """
    col = f"candles_{symbol}_{TIMEFRAME}"
    db = ctx.client[database]
    end_ms = int(time.time() * 1000) if live else seed.FIXED_END_MS
    await seed.seed_series(db, col, symbol, TIMEFRAME, end_ms, SLOTS)
    await seed.index(db, col)
    start, end = seed.window(end_ms, TIMEFRAME, SLOTS)
    return audit_request([symbol], TIMEFRAME, start, None if live else end)


async def start(ctx: Context, database: str, names: list[str], symbol: str) -> list[Replica]:
    env = election_env(ctx, symbol)
    try:
        return list(await asyncio.gather(*(ctx.replica(n, database, **env) for n in names)))
    except (RuntimeError, TimeoutError) as exc:
        raise NotMeasured(f"replica with ENABLE_LEADER_ELECTION=true did not start: {exc}") from exc


async def roles(replicas: list[Replica]) -> dict[str, str]:
    found: dict[str, str] = {}
    for r in replicas:
        if not r.alive:
            found[r.name] = "dead"
            continue
        try:
            found[r.name] = pb.Role.Name((await r.status(limit_s=2)).role)
        except grpc.aio.AioRpcError as exc:
            found[r.name] = exc.code().name
    return found


async def leader_of(replicas: list[Replica], within: float) -> Replica:
    deadline = time.monotonic() + within
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = await roles(replicas)
        leading = [r for r in replicas if seen.get(r.name) == "ROLE_LEADER"]
        if len(leading) == 1:
            return leading[0]
        await asyncio.sleep(0.05)
    raise NotMeasured(f"leader election: no single leader within {within:g} s (roles: {seen})")


async def until_forwarding(
    follower: Replica, leader: Replica, req: pb.RunAuditRequest, within: float
) -> None:
    """Retries RunAudit on the follower until the leader serves it."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            reply = await follower.stub.RunAudit(req, timeout=5)
            if reply.cycle.served_by == leader.name:
                return
            last = f"served by {reply.cycle.served_by!r}"
        except grpc.aio.AioRpcError as exc:
            last = f"{exc.code().name}: {exc.details()}"
        await asyncio.sleep(0.05)
    raise NotMeasured(
        f"forwarding: follower {follower.name} did not reach leader {leader.name} "
        f"within {within:g} s (last: {last})"
    )


def settle_time(ctx: Context) -> float:
    """Generous bound for an election to settle: a few lease lengths plus start-up."""
    return 4 * ctx.sizes.election_timeout + 10
