"""8. Exchange scale: steady-state cycles over 480 to 30,000 series, incremental
versus full, and GetStatus's size.

Scaled for SecantusDB (it scans about 25,000 candles/s): at each size every
series is a complete ``1m`` series in ONE collection (``CANDLE_COLLECTION_TEMPLATE=
bench_scale_{timeframe}``, a database per size holding just that size's
symbols) with a window of ``scale_slots`` candles (default 24,
so 720,000 documents at 30,000 series) and AUDIT_RECHECK=``scale_recheck``
(default 300 s, 5 slots). A cycle is RunAudit with no selection and no window,
i.e. what the scheduler runs (the live tail is off, so only cycles are timed).

* **Cold** is a replica's first cycle: every series is read in full.
* **Steady** cycles follow; before each the bench inserts every candle that has
  become due since the last (about one per series per minute), as a feed would.
  Per-series steady cost must be flat from the smallest to the largest size.
* **Incremental ÷ full**: ``ratio_series`` series (default 480) of
  ``ratio_slots`` candles (default 1,440: one day of 1m) with the default
  AUDIT_RECHECK (3,600 s). Steady cycles of one replica are compared with those
  of a replica with AUDIT_FULL_SCAN_EVERY=1 (every cycle a full scan), same data
  and run.
* **Write floor** (``bench/write_floor.py``): the cycle's own store call that
  writes each series' score and settled record, timed alone over up to
  ``FLOOR_SERIES`` series, against the same content as one document per 500
  series. Times the number of series, it is the least a steady cycle can take
  while every series stores a score every cycle.
* **GetStatus**: the BASIC (default) and FULL reply sizes after each size's
  cycles, plus a ``status_series`` (default 48) replica for the small end.

The collection has the ``{timestamp: 1}`` index ``setup-db`` makes for shared
collections, so a cycle reads every series' tail by time, in slices of about
20,000 candles per query.
Replicas run standalone (epoch 0): fenced writes are figure 7's business.
"""

from __future__ import annotations

import time
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from auditsvc.storage.mongo.database import SERIES, connect, to_dt
from bench import seed
from bench.context import Context
from bench.figures.common import result, timed_audit, verdict_at_most
from bench.stats import median, rounded
from bench.write_floor import write_floor

KEY = "scale"
TITLE = "Exchange scale (steady-state cycles, incremental, GetStatus size)"
TARGET = (
    "steady per-series cost largest/smallest <= 1.2; steady cycle at the largest <= 30 s; "
    "incremental / full <= 0.2; GetStatus BASIC <= 4 KB"
)
TIMEFRAME = "1m"
MIN = 60_000
BASIC_LIMIT = 4096
# The run's own time limit: at 30,000 series the figure took 833 s on 2026-12-01
# (seeding 234 s, the cold cycle 110 s), too close to the 900 s default.
RUN_LIMIT_S = 3600.0
# Series whose documents the write-floor probe rewrites (bench/write_floor.py).
FLOOR_SERIES = 2000


class Feed:
    """Complete 1m series in one collection, topped up to the current due slot."""

    def __init__(self, db: Any, collection: str, symbols: list[str], slots: int) -> None:
        self._db = db
        self._collection = collection
        self._symbols = symbols
        self._until = seed.now_ms() // MIN * MIN - (slots + 2) * MIN  # first open to write

    async def top_up(self, n: int | None = None) -> int:
        """Writes every slot opened by now, the open one included (an exchange's kline
        stream publishes the open candle), for the first ``n`` symbols (all: None).

        Writing only closed slots raced the cycle: at 30,000 series the insert takes
        seconds, so a minute closing during it left one gap in EVERY series, and a
        cycle that stores 30,000 new gaps is not the steady state measured here."""
        end = seed.now_ms() // MIN * MIN + MIN
        opens = range(self._until, end, MIN)
        symbols = self._symbols if n is None else self._symbols[:n]
        docs = [{"symbol": s, "timestamp": to_dt(t), "close": 1.0} for t in opens for s in symbols]
        if docs:
            await seed.insert(self._db, self._collection, docs)
        if n is None:
            self._until = end
        return len(docs)


async def time_index(db: Any, collection: str) -> None:
    """What ``setup-db`` adds when symbols share collections (tails read by time)."""
    await db[collection].create_index([("timestamp", 1)], name="timestamp")


async def status_bytes(replica: Any) -> dict[str, int]:
    call = replica.stub_channel().unary_unary("/auditpb.v1.AuditService/GetStatus")
    basic = await call(b"", timeout=60)
    full = await call(
        pb.GetStatusRequest(view=pb.STATUS_VIEW_FULL).SerializeToString(), timeout=120
    )
    return {"getstatus_basic_bytes": len(basic), "getstatus_full_bytes": len(full)}


async def cycles(
    ctx: Context, name: str, database: str, feed: Feed, symbols: list[str], **env: str
) -> dict[str, Any]:
    """A fresh replica over ``symbols``: its cold cycle, then ``trials`` steady ones."""
    # No settled record from an earlier size: the cold cycle reads every series in full.
    await ctx.client[database][SERIES].delete_many({})
    # A file, as an exchange's list would be: 30,000 symbols outgrow one environment string.
    listing = ctx.work_dir / f"{name}-symbols.txt"
    listing.write_text("\n".join(symbols) + "\n")
    replica = await ctx.replica(
        name,
        database,
        AUDIT_SYMBOLS="",
        AUDIT_SYMBOLS_FILE=str(listing),
        AUDIT_TIMEFRAMES=TIMEFRAME,
        CANDLE_COLLECTION_TEMPLATE="bench_scale_{timeframe}",
        AUDIT_MIN_CANDLES="1",
        LIVE_MODE="off",
        **env,
    )
    await feed.top_up()
    cold, _ = await timed_audit(replica.stub, pb.RunAuditRequest(), limit_s=1800)
    steady: list[float] = []
    for _ in range(ctx.sizes.trials):
        await feed.top_up()
        seconds, reply = await timed_audit(replica.stub, pb.RunAuditRequest(), limit_s=1800)
        steady.append(seconds)
        assert len(reply.cycle.series) == len(symbols), len(reply.cycle.series)
    sizes = await status_bytes(replica)
    await replica.close()
    cycle = median(steady)
    return {
        "cold_cycle_s": rounded(cold),
        "steady_cycle_s": rounded(cycle),
        "steady_per_series_ms": rounded(cycle / len(symbols) * 1000, 3),
        "steady_cycle_s_trials": [rounded(x) for x in steady],
        **sizes,
    }


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    sizes = sorted(sz.scale_series)
    collection = f"bench_scale_{TIMEFRAME}"
    symbols = [f"S{i:05d}" for i in range(max(sizes[-1], sz.ratio_series, sz.status_series))]
    window = {"AUDIT_LOOKBACK": str(sz.scale_slots * 60), "AUDIT_RECHECK": str(sz.scale_recheck)}
    rows = {}
    seeded = 0
    seed_s = 0.0

    async def sized(label: str, n: int) -> dict[str, Any]:
        # Each size in a collection of its own that holds exactly its symbols: a
        # shared collection holding 30,000 symbols while 480 are audited measures
        # reading other symbols' candles, not the cost of 480 series.
        nonlocal seeded, seed_s
        name = ctx.database(f"scale_{label}")
        db = ctx.client[name]
        began = time.perf_counter()
        feed = Feed(db, collection, symbols[:n], sz.scale_slots)
        seeded += await feed.top_up()
        await seed.index(db, collection)
        await time_index(db, collection)
        seed_s += time.perf_counter() - began
        row = await cycles(ctx, f"scale{label}", name, feed, symbols[:n], **window)
        await ctx.client.drop_database(name)
        return row

    for n in sizes:
        rows[n] = await sized(str(n), n)
    small = await sized("status", sz.status_series)
    flat = rows[sizes[-1]]["steady_per_series_ms"] / rows[sizes[0]]["steady_per_series_ms"]

    # Incremental vs full: longer series in their own collection.
    ratio_name = ctx.database("scale_ratio")
    ratio_db = ctx.client[ratio_name]
    ratio_symbols = symbols[: sz.ratio_series]
    ratio_feed = Feed(ratio_db, collection, ratio_symbols, sz.ratio_slots)
    began = time.perf_counter()
    ratio_seeded = await ratio_feed.top_up()
    await seed.index(ratio_db, collection)
    await time_index(ratio_db, collection)
    ratio_seed_s = time.perf_counter() - began
    long_window = {"AUDIT_LOOKBACK": str(sz.ratio_slots * 60)}
    inc = await cycles(ctx, "incremental", ratio_name, ratio_feed, ratio_symbols, **long_window)
    full = await cycles(
        ctx, "full", ratio_name, ratio_feed, ratio_symbols, AUDIT_FULL_SCAN_EVERY="1", **long_window
    )
    inc_ratio = inc["steady_cycle_s"] / full["steady_cycle_s"]

    # The per-series write every steady cycle makes, alone: the floor of a cycle.
    floor_db = connect(ctx.service_uri, ctx.database("scale_floor"), 30_000)
    try:
        floor = await write_floor(floor_db, min(sizes[-1], FLOOR_SERIES))
    finally:
        await floor_db.close()

    largest = rows[sizes[-1]]
    basic_max = max(r["getstatus_basic_bytes"] for r in [*rows.values(), small])
    met = (
        flat <= 1.2
        and largest["steady_cycle_s"] <= 30
        and inc_ratio <= 0.2
        and basic_max <= BASIC_LIMIT
    )
    return result(
        target=TARGET,
        summary=(
            "; ".join(
                f"{n:,} series: steady {r['steady_cycle_s']:.2f} s "
                f"({r['steady_per_series_ms']:.2f} ms/series), cold {r['cold_cycle_s']:.1f} s"
                for n, r in rows.items()
            )
            + f"; incremental/full {inc_ratio:.2f} at {sz.ratio_series:,}x{sz.ratio_slots:,}"
            + f"; GetStatus BASIC ≤ {basic_max:,} B"
            + f"; write floor {floor['series_document_ms']:.2f} ms/series "
            + f"(≥ {floor['series_document_ms'] * sizes[-1] / 1000:.1f} s at {sizes[-1]:,}), "
            + f"{floor['chunk_document_ms']:.3f} as one document per 500"
        ),
        verdict=verdict_at_most(0.0 if met else 2.0, 1.0),
        ratio=flat,
        ratio_of=f"steady per-series cost at {sizes[-1]:,} / at {sizes[0]:,} series",
        details={
            **{f"{n} series": r for n, r in rows.items()},
            f"{sz.status_series} series": small,
            "incremental_over_full": rounded(inc_ratio, 3),
            "write_floor": floor,
            f"incremental, {sz.ratio_series} series x {sz.ratio_slots} candles": inc,
            f"full every cycle, {sz.ratio_series} series x {sz.ratio_slots} candles": full,
            "timeframe": TIMEFRAME,
            "window_candles": sz.scale_slots,
            "audit_recheck_s": sz.scale_recheck,
            "documents_seeded": seeded,
            "seed_seconds": rounded(seed_s),
            "ratio_documents_seeded": ratio_seeded,
            "ratio_seed_seconds": rounded(ratio_seed_s),
        },
    )
