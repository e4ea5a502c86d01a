"""8. Scale: scheduled-cycle time for 48, 480 and 4,800 series of 24 h each.

Scaled down for SecantusDB: the series are 1h candles (24 per series, demo
shaped, so each has gaps and duplicates to store), all symbols in one
collection (CANDLE_COLLECTION_TEMPLATE=bench_scale_{timeframe}) rather than
4,800 collections. Each size gets a fresh replica configured with exactly
that many symbols and the default AUDIT_CONCURRENCY (10); a cycle is RunAudit
with no selection and no window, i.e. what the scheduler runs. Linear means
the per-series cost is flat: per-series(largest) / per-series(smallest) ≈ 1.

Those replicas run standalone (epoch 0, no fencing). Production runs with
leader election, where each series' results are one fenced transaction, so
the middle size is measured once more with ENABLE_LEADER_ELECTION=true.
GetStatus returns the last cycle with every series report, so its size and
latency after each size's cycles are recorded too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo.uri_parser import parse_uri

from auditpb.v1 import audit_pb2 as pb
from bench import seed
from bench.context import Context, NotMeasured
from bench.figures.common import result, timed_audit, verdict_at_most
from bench.rss import established_to
from bench.stats import median, rounded

KEY = "scale"
TITLE = "Scale (series per cycle)"
TARGET = "per-series cycle cost flat: per-series(largest) / per-series(smallest) <= 1.2"
CONCURRENCY = "10"


def without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def db_port(uri: str) -> int | None:
    nodes = parse_uri(uri)["nodelist"]
    return int(nodes[0][1]) if len(nodes) == 1 else None


async def max_connections(pid: int, port: int | None, stop: asyncio.Event) -> int:
    best = 0
    while port is not None and not stop.is_set():
        best = max(best, await asyncio.to_thread(established_to, pid, port))
        await asyncio.sleep(0.1)
    return best


async def get_status(replica: Any, calls: int = 10) -> dict[str, Any]:
    """GetStatus carries the whole last cycle: its size and latency after this cycle."""
    call = replica.stub_channel().unary_unary("/auditpb.v1.AuditService/GetStatus")
    took: list[float] = []
    size = 0
    for _ in range(calls):
        began = time.perf_counter()
        size = len(await call(b"", timeout=60))
        took.append(time.perf_counter() - began)
    return {"getstatus_bytes": size, "getstatus_p50_ms": rounded(median(took) * 1000, 1)}


async def until_leading(replica: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await replica.status()).role == pb.ROLE_LEADER:
            return
        await asyncio.sleep(0.05)
    raise NotMeasured(f"leader election: the only replica did not lead within {within:g} s")


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    tf = sz.scale_timeframe
    name = ctx.database("scale")
    sizes = sorted(sz.scale_series)
    symbols = [f"S{i:05d}" for i in range(sizes[-1])]
    slots = seed.slots_for(tf, sz.scale_hours / 24)
    began = time.perf_counter()
    docs = await seed.seed_many(
        ctx.client[name], f"bench_scale_{tf}", symbols, tf, seed.now_ms(), slots
    )
    seeded_s = time.perf_counter() - began
    port = db_port(ctx.uri)

    async def measure(n: int, **env: str) -> dict[str, Any]:
        replica = await ctx.replica(
            f"scale{n}{'e' if env else ''}",
            name,
            AUDIT_SYMBOLS=",".join(symbols[:n]),
            AUDIT_TIMEFRAMES=tf,
            CANDLE_COLLECTION_TEMPLATE="bench_scale_{timeframe}",
            AUDIT_LOOKBACK=str(sz.scale_hours * 3600),
            AUDIT_MIN_CANDLES="1",
            AUDIT_CONCURRENCY=CONCURRENCY,
            **env,
        )
        if env:
            await until_leading(replica, 4 * sz.election_timeout + 10)
        await timed_audit(replica.stub, pb.RunAuditRequest())  # warm-up
        took: list[float] = []
        stop = asyncio.Event()
        watcher = asyncio.create_task(max_connections(replica.pid, port, stop))
        for _ in range(sz.trials):
            seconds, reply = await timed_audit(replica.stub, pb.RunAuditRequest())
            took.append(seconds)
            assert len(reply.cycle.series) == n, len(reply.cycle.series)
        stop.set()
        conns = await watcher
        status = await get_status(replica)
        await replica.close()
        cycle = median(took)
        first = reply.cycle.series[0]
        return {
            "series": n,
            "cycle_s": rounded(cycle),
            "per_series_ms": rounded(cycle / n * 1000, 2),
            "cycle_s_trials": [rounded(x) for x in took],
            "max_db_connections": conns,
            "candles_per_series": first.present_candles + first.surplus_documents,
            **status,
        }

    rows = [await measure(n) for n in sizes]
    flat = rows[-1]["per_series_ms"] / rows[0]["per_series_ms"]
    middle = sizes[len(sizes) // 2]
    try:
        fenced: dict[str, Any] | str = await measure(
            middle,
            ENABLE_LEADER_ELECTION="true",
            LEADER_ELECTION_HEARTBEAT_INTERVAL=f"{sz.heartbeat:g}",
            LEADER_ELECTION_TIMEOUT=f"{sz.election_timeout:g}",
        )
    except (NotMeasured, RuntimeError, TimeoutError) as exc:
        fenced = f"not measured: {exc}"
    return result(
        target=TARGET,
        summary="; ".join(
            f"{r['series']:,} series: {r['cycle_s']:.2f} s ({r['per_series_ms']:.1f} ms/series)"
            for r in rows
        ),
        verdict=verdict_at_most(flat, 1.2),
        ratio=flat,
        ratio_of=f"per-series cost at {sizes[-1]:,} / at {sizes[0]:,} series",
        details={
            **{f"{r['series']} series": without(r, "series") for r in rows},
            f"{middle} series, election on (fenced writes)": fenced,
            "timeframe": tf,
            "audit_concurrency": int(CONCURRENCY),
            "documents_seeded": docs,
            "seed_seconds": rounded(seeded_s),
        },
    )
