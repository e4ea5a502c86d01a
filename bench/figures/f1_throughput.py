"""1. Audit throughput: RunAudit over a seeded range vs a bare driver scan of the same candles.

Baseline: ``find(filter).sort("timestamp")`` projecting only ``timestamp``, one
cursor per series, as many at once as the service's AUDIT_CONCURRENCY, driver
defaults (no tz-aware decoding), iterated with ``async for``. The audit is the
RunAudit RPC wall time seen by the client, so it includes gRPC, the scanner,
scoring and the fenced writes of the results.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from auditsvc.storage.mongo.database import to_dt
from bench import seed
from bench.context import Context
from bench.figures.common import audit_request, result, timed_audit, verdict_at_most
from bench.stats import median, ratio, rounded

KEY = "audit_throughput"
TITLE = "Audit throughput"
TARGET = "RunAudit time / bare scan time <= 1.2 (stretch < 1.0)"
CONCURRENCY = 10  # auditsvc's default AUDIT_CONCURRENCY, used by both sides
TIMEFRAME = "1m"


async def baseline(db: Any, symbols: list[str], start_ms: int, end_ms: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def scan(symbol: str) -> int:
        async with gate:
            cursor = (
                db[f"candles_{symbol}_{TIMEFRAME}"]
                .find(
                    {
                        "symbol": symbol,
                        "timestamp": {"$gte": to_dt(start_ms), "$lt": to_dt(end_ms)},
                    },
                    {"_id": 0, "timestamp": 1},
                )
                .sort("timestamp", 1)
            )
            n = 0
            async for _ in cursor:
                n += 1
            return n

    began = time.perf_counter()
    counts = await asyncio.gather(*(scan(s) for s in symbols))
    return time.perf_counter() - began, sum(counts)


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("throughput")
    db = ctx.client[name]
    symbols = [f"TP{i:02d}USDT" for i in range(sz.symbols)]
    slots = seed.slots_for(TIMEFRAME, sz.days)
    start_ms, end_ms = seed.window(seed.FIXED_END_MS, TIMEFRAME, slots)
    began = time.perf_counter()
    docs = 0
    for symbol in symbols:
        col = f"candles_{symbol}_{TIMEFRAME}"
        docs += await seed.seed_series(db, col, symbol, TIMEFRAME, seed.FIXED_END_MS, slots)
        await seed.index(db, col)
    seeded_s = time.perf_counter() - began

    replica = await ctx.replica(
        "tp", name, AUDIT_SYMBOLS=",".join(symbols), AUDIT_TIMEFRAMES=TIMEFRAME
    )
    req = audit_request(symbols, TIMEFRAME, start_ms, end_ms)
    # Warm-up: connections, imports, caches on both sides.
    await timed_audit(replica.stub, audit_request(symbols, TIMEFRAME, end_ms - 3_600_000, end_ms))
    await baseline(db, symbols, end_ms - 3_600_000, end_ms)

    audits: list[float] = []
    bases: list[float] = []
    server: list[float] = []
    scanned = audited = 0
    for trial in range(sz.trials):
        # ABBA order so that drift over the run does not favour one side.
        order = ("base", "audit") if trial % 2 == 0 else ("audit", "base")
        for side in order:
            if side == "base":
                took, scanned = await baseline(db, symbols, start_ms, end_ms)
                bases.append(took)
            else:
                took, reply = await timed_audit(replica.stub, req)
                audits.append(took)
                c = reply.cycle
                server.append(
                    (c.finished_at.ToMilliseconds() - c.started_at.ToMilliseconds()) / 1000
                )
                audited = sum(
                    s.present_candles + s.surplus_documents + s.misaligned_candles for s in c.series
                )
    r = ratio(median(audits), median(bases))
    audit_rate = scanned / median(audits)
    base_rate = scanned / median(bases)
    return result(
        target=TARGET,
        summary=(
            f"{scanned:,} candles ({sz.symbols} x {TIMEFRAME} x {sz.days:g} d): audit "
            f"{median(audits):.2f} s = {audit_rate:,.0f} candles/s; bare scan "
            f"{median(bases):.2f} s = {base_rate:,.0f} candles/s"
        ),
        verdict=verdict_at_most(r, 1.2, stretch=1.0),
        ratio=r,
        ratio_of="RunAudit / bare scan (median wall time)",
        details={
            "candles": scanned,
            "documents_seeded": docs,
            "documents_audited": audited,
            "consistent": audited == scanned,
            "seed_seconds": rounded(seeded_s),
            "audit_seconds": [rounded(x) for x in audits],
            "audit_server_seconds": [rounded(x) for x in server],
            "baseline_seconds": [rounded(x) for x in bases],
            "audit_candles_per_s": round(audit_rate),
            "baseline_candles_per_s": round(base_rate),
        },
    )
