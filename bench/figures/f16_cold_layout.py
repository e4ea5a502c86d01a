"""16. A cold audit by collection layout: the same series, shared or apart.

``cold_series`` ``1h`` series of ``cold_slots`` candles (the demo's shape: two
gaps and three duplicated slots each; a cold audit reads only their times) are
audited cold (no settled record) with one RunAudit with no selection,
LIVE_MODE=off, in three layouts:

* ``shared``: one collection, the natural ``{symbol, timestamp}`` index only
  (no ``setup-db``): reads by symbol, in bounded ``$in`` batches;
* ``shared+time``: the same with the ``{timestamp: 1}`` index ``setup-db``
  adds: reads by time slices;
* ``per-symbol``: one collection per symbol (``candles_{symbol}_{timeframe}``).

Measured: the RunAudit wall time, and the slowest of the pings another client
sends every 0.1 s during it (the database must keep answering: before the
bounded reads, one ``$in`` of 2,000 symbols kept SecantusDB busy past 60 s).
Ratio: the shared layouts' time over the per-symbol time. A report; the test
suite asserts the ping bound (tests/integration/test_cold_shared_audit.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo import AsyncMongoClient

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from bench.context import Context, NotMeasured
from bench.figures.common import MET, result

KEY = "cold_layout"
TITLE = "Cold audit by collection layout (shared vs per-symbol)"
TARGET = "reported: RunAudit of every series cold; slowest ping during it < 1 s"

_INSERT_BATCH = 10_000
_AUDIT_TIMEOUT = 1800.0


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    symbols = [f"K{i:04d}USDT" for i in range(sz.cold_series)]
    rows: dict[str, Any] = {}
    for layout in ("per-symbol", "shared", "shared+time"):
        rows[layout] = await _one(ctx, layout, symbols)
    base = rows["per-symbol"]["audit_s"]
    for layout in ("shared", "shared+time"):
        rows[layout]["vs_per_symbol"] = round(rows[layout]["audit_s"] / base, 3)
    slowest = max(r["slowest_ping_ms"] for r in rows.values())
    summary = "; ".join(
        f"{layout} {r['audit_s']:.1f} s (slowest ping {r['slowest_ping_ms']:.0f} ms)"
        for layout, r in rows.items()
    )
    return result(
        target=TARGET,
        summary=f"{sz.cold_series} x {sz.cold_slots} 1h candles: {summary}",
        verdict=MET if slowest < 1000 else "missed",
        ratio=rows["shared"]["vs_per_symbol"],
        ratio_of="shared (natural index) / per-symbol audit time",
        details=rows,
    )


async def _one(ctx: Context, layout: str, symbols: list[str]) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database(f"cold_{layout.replace('+', '_').replace('-', '_')}")
    db = ctx.client[name]
    shared = layout != "per-symbol"
    end = int(time.time() * 1000)
    buffer: list[dict[str, Any]] = []
    documents = 0
    for i, symbol in enumerate(symbols):
        docs, _ = demo_series(symbol, "1h", end, sz.cold_slots, price=20.0 + i)
        if shared:
            buffer += docs
            if len(buffer) >= _INSERT_BATCH or i == len(symbols) - 1:
                await db["klines_1h"].insert_many(buffer, ordered=False)
                documents, buffer = documents + len(buffer), []
        else:
            coll = db[f"candles_{symbol}_1h"]
            await coll.create_index([("symbol", 1), ("timestamp", 1)])
            await coll.insert_many(docs, ordered=False)
            documents += len(docs)
    if shared:
        await db["klines_1h"].create_index([("symbol", 1), ("timestamp", 1)])
        if layout == "shared+time":
            await db["klines_1h"].create_index([("timestamp", 1)])
    path = ctx.log_dir / f"cold_{len(symbols)}.symbols"
    path.write_text("\n".join(symbols))
    env = {
        "AUDIT_SYMBOLS_FILE": str(path),
        "AUDIT_TIMEFRAMES": "1h",
        "AUDIT_LOOKBACK": str(sz.cold_slots * 3600),
        "AUDIT_MIN_CANDLES": str(sz.cold_slots),
        "LIVE_MODE": "off",
        "MONGODB_TIMEOUT_MS": "30000",
    }
    if shared:
        env["CANDLE_COLLECTION_TEMPLATE"] = "klines_{timeframe}"
    replica = await ctx.replica(f"cold-{layout}", name, **env)
    pings: list[float] = []
    stop = asyncio.Event()
    pinger = asyncio.create_task(_ping(ctx.service_uri, pings, stop))
    try:
        began = time.perf_counter()
        reply = await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=_AUDIT_TIMEOUT)
        took = time.perf_counter() - began
    finally:
        stop.set()
        await asyncio.gather(pinger, return_exceptions=True)
        await replica.close()
    if reply.cycle.status != pb.CYCLE_STATUS_SUCCEEDED:
        raise NotMeasured(f"{layout}: the cold audit failed: {reply.cycle.error}")
    return {
        "audit_s": round(took, 2),
        "documents": documents,
        "series": len(reply.cycle.series),
        "slowest_ping_ms": round(max(pings, default=0.0) * 1000, 1),
        "pings": len(pings),
    }


async def _ping(uri: str, latencies: list[float], stop: asyncio.Event) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        while not stop.is_set():
            began = time.perf_counter()
            await client.admin.command("ping")
            latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.1)
    finally:
        await client.close()
