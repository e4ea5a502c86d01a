"""2. Memory: peak RSS of the service process while it audits 1x and then 10x a range.

One series is seeded with ``days x memory_factor`` days of 1m candles. Each
trial starts a fresh replica, warms it up with one unmeasured 1x audit, then
audits the last ``days`` (1x) and the whole series (10x) while a thread samples
the process's RSS every 2 ms. Growth = peak during 10x - peak during 1x.
"""

from __future__ import annotations

import time
from typing import Any

from bench import seed
from bench.context import Context
from bench.figures.common import audit_request, result, timed_audit, verdict_at_most
from bench.rss import PeakRSS, rss_mb
from bench.stats import median, rounded

KEY = "memory"
TITLE = "Memory (peak RSS growth)"
TARGET = "peak RSS while auditing 10x the range - peak while auditing 1x <= 30 MB"
SYMBOL = "MEMUSDT"
TIMEFRAME = "1m"
LIMIT_MB = 30.0


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("memory")
    db = ctx.client[name]
    col = f"candles_{SYMBOL}_{TIMEFRAME}"
    short = seed.slots_for(TIMEFRAME, sz.days)
    long = short * sz.memory_factor
    began = time.perf_counter()
    docs = await seed.seed_series(db, col, SYMBOL, TIMEFRAME, seed.FIXED_END_MS, long)
    await seed.index(db, col)
    seeded_s = time.perf_counter() - began
    s_start, end = seed.window(seed.FIXED_END_MS, TIMEFRAME, short)
    l_start, _ = seed.window(seed.FIXED_END_MS, TIMEFRAME, long)
    one_x = audit_request([SYMBOL], TIMEFRAME, s_start, end)
    ten_x = audit_request([SYMBOL], TIMEFRAME, l_start, end)

    trials: list[dict[str, Any]] = []
    for trial in range(sz.trials):
        replica = await ctx.replica(
            f"mem{trial}", name, AUDIT_SYMBOLS=SYMBOL, AUDIT_TIMEFRAMES=TIMEFRAME
        )
        started_mb = rss_mb(replica.pid)
        await timed_audit(replica.stub, one_x)  # warm-up
        warm_mb = rss_mb(replica.pid)
        with PeakRSS(replica.pid) as p1:
            t1, r1 = await timed_audit(replica.stub, one_x)
        with PeakRSS(replica.pid) as p10:
            t10, r10 = await timed_audit(replica.stub, ten_x)
        trials.append(
            {
                "start_mb": rounded(started_mb, 1),
                "after_warmup_mb": rounded(warm_mb, 1),
                "peak_1x_mb": rounded(p1.peak_mb, 1),
                "peak_10x_mb": rounded(p10.peak_mb, 1),
                "growth_mb": rounded(p10.peak_mb - p1.peak_mb, 1),
                "seconds_1x": rounded(t1),
                "seconds_10x": rounded(t10),
                "samples": p1.samples + p10.samples,
                "candles_1x": sum(s.present_candles for s in r1.cycle.series),
                "candles_10x": sum(s.present_candles for s in r10.cycle.series),
            }
        )
        await replica.close()
    growth = median([t["growth_mb"] for t in trials])
    peak1 = median([t["peak_1x_mb"] for t in trials])
    peak10 = median([t["peak_10x_mb"] for t in trials])
    return result(
        target=TARGET,
        summary=(
            f"peak RSS {peak1:.1f} MB (1x: {trials[0]['candles_1x']:,} candles) → "
            f"{peak10:.1f} MB (10x: {trials[0]['candles_10x']:,}); growth {growth:+.1f} MB"
        ),
        verdict=verdict_at_most(growth, LIMIT_MB),
        ratio=peak10 / peak1 if peak1 else None,
        ratio_of="peak RSS 10x / peak RSS 1x (median)",
        details={
            "growth_mb_median": growth,
            "peak_1x_mb_median": peak1,
            "peak_10x_mb_median": peak10,
            "documents_seeded": docs,
            "seed_seconds": rounded(seeded_s),
            "trials": trials,
        },
    )
