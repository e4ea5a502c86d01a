"""4. RPC speed: GetStatus and ListGaps vs a trivial echo service, at 1 and 50 in flight.

The echo service (``bench.echo``) runs in its own process with the same grpc.aio
server options and echoes the bytes of a real GetStatus reply, so both sides
move the same payload. Calls are made with raw bytes on one channel per
target (no protobuf work in the client). Per trial and concurrency the three
targets run back to back for ``rpc_seconds`` each, in rotating order.
"""

from __future__ import annotations

from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from bench import seed
from bench.context import Context
from bench.echo import METHOD as ECHO
from bench.figures.common import result, timed_audit, ts, verdict_at_least
from bench.load import closed_loop
from bench.procs import Echo
from bench.stats import median

KEY = "rpc_speed"
TITLE = "RPC speed (GetStatus, ListGaps vs echo)"
TARGET = "GetStatus throughput >= 0.8 x echo throughput (at every concurrency)"
SYMBOLS = ("RPAUSDT", "RPBUSDT")
TIMEFRAMES = ("1m", "1h")
STATUS = "/auditpb.v1.AuditService/GetStatus"
GAPS = "/auditpb.v1.AuditService/ListGaps"


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("rpc")
    db = ctx.client[name]
    for symbol in SYMBOLS:
        for tf in TIMEFRAMES:
            col = f"candles_{symbol}_{tf}"
            await seed.seed_series(db, col, symbol, tf, seed.FIXED_END_MS, seed.slots_for(tf, 2))
            await seed.index(db, col)
    replica = await ctx.replica(
        "rpc", name, AUDIT_SYMBOLS=",".join(SYMBOLS), AUDIT_TIMEFRAMES=",".join(TIMEFRAMES)
    )
    # One stored cycle (4 series) and its gaps for GetStatus and ListGaps to read back.
    start, end = seed.FIXED_END_MS - 2 * seed.DAY_MS, seed.FIXED_END_MS
    req = pb.RunAuditRequest(symbols=SYMBOLS, timeframes=TIMEFRAMES)
    req.start_time.CopyFrom(ts(start))
    req.end_time.CopyFrom(ts(end))
    await timed_audit(replica.stub, req)
    echo = Echo(ctx.log_dir)
    ctx.processes.add(echo)
    await echo.start()

    service = grpc.aio.insecure_channel(replica.target)
    echoes = grpc.aio.insecure_channel(echo.target)
    try:
        status_bytes = await service.unary_unary(STATUS)(
            pb.GetStatusRequest().SerializeToString(), timeout=10
        )
        gaps_req = pb.ListGapsRequest().SerializeToString()
        gaps_reply = pb.ListGapsResponse.FromString(
            await service.unary_unary(GAPS)(gaps_req, timeout=10)
        )
        targets = {
            "echo": (echoes, ECHO, status_bytes),
            "GetStatus": (service, STATUS, pb.GetStatusRequest().SerializeToString()),
            "ListGaps": (service, GAPS, gaps_req),
        }
        for channel, method, payload in targets.values():  # warm-up
            await closed_loop(channel, method, payload, 4, min(0.5, sz.rpc_seconds))
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        names = list(targets)
        for trial in range(sz.trials):
            for c in sz.rpc_concurrency:
                for k in range(len(names)):
                    which = names[(k + trial) % len(names)]
                    channel, method, payload = targets[which]
                    load = await closed_loop(channel, method, payload, c, sz.rpc_seconds)
                    runs.setdefault((which, c), []).append(load.summary())
    finally:
        await service.close()
        await echoes.close()

    table: dict[str, dict[str, float]] = {}
    for (which, c), summaries in runs.items():
        table[f"{which} @{c}"] = {
            key: round(median([s[key] for s in summaries]), 3)
            for key in ("calls_per_s", "p50_ms", "p99_ms")
        } | {"errors": sum(s["errors"] for s in summaries)}
    # Ratios pair each trial's measurement with the echo run next to it, then take the median.
    ratios = {
        f"{m} @{c}": round(
            median(
                [
                    mine["calls_per_s"] / echo["calls_per_s"]
                    for mine, echo in zip(runs[(m, c)], runs[("echo", c)], strict=True)
                ]
            ),
            3,
        )
        for m in ("GetStatus", "ListGaps")
        for c in sz.rpc_concurrency
    }
    worst = min(ratios[f"GetStatus @{c}"] for c in sz.rpc_concurrency)
    parts = [
        f"@{c}: GetStatus {table[f'GetStatus @{c}']['calls_per_s']:,.0f}/s vs echo "
        f"{table[f'echo @{c}']['calls_per_s']:,.0f}/s"
        for c in sz.rpc_concurrency
    ]
    return result(
        target=TARGET,
        summary="; ".join(parts),
        verdict=verdict_at_least(worst, 0.8),
        ratio=worst,
        ratio_of="GetStatus / echo throughput (worst concurrency)",
        details={
            "ratios_vs_echo": ratios,
            **{k: v for k, v in sorted(table.items())},
            "payload_bytes": len(status_bytes),
            "gaps_per_page": len(gaps_reply.gaps),
        },
    )
