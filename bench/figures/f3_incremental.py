"""3. Incremental cost: a scheduled cycle over 1 day vs 30 days of history.

Two series are seeded ending now with the same last day (demo-shaped: two
gaps, three duplicated slots); the second also has ``history_days[1] - 1``
older days before it. A scheduled cycle is RunAudit without
start/end: the default window (AUDIT_LOOKBACK = 1 day) is the same for both,
so with the (symbol, timestamp) index the cost must not depend on history.
Each trial times ``incremental_repeats`` cycles per series, alternating.
"""

from __future__ import annotations

from typing import Any

from bench import seed
from bench.context import Context
from bench.figures.common import audit_request, result, timed_audit, verdict_at_most
from bench.stats import median, ratio, rounded

KEY = "incremental_cost"
TITLE = "Incremental cost (history length)"
TARGET = "scheduled-cycle time with long history / with 1 day of history ≈ 1 (<= 1.2)"
TIMEFRAME = "1m"


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("incremental")
    db = ctx.client[name]
    short_days, long_days = sz.history_days
    series = {short_days: f"H{short_days:03d}USDT", long_days: f"H{long_days:03d}USDT"}
    end = seed.now_ms()
    day = seed.slots_for(TIMEFRAME, 1)
    last_day_start, _ = seed.window(end, TIMEFRAME, day)
    docs = {}
    for days, symbol in series.items():
        col = f"candles_{symbol}_{TIMEFRAME}"
        docs[days] = await seed.seed_series(db, col, symbol, TIMEFRAME, end, day)
        older = seed.slots_for(TIMEFRAME, days - 1) if days > 1 else 0
        if older:
            docs[days] += await seed.seed_series(db, col, symbol, TIMEFRAME, last_day_start, older)
        await seed.index(db, col)
    replica = await ctx.replica(
        "inc",
        name,
        AUDIT_SYMBOLS=",".join(series.values()),
        AUDIT_TIMEFRAMES=TIMEFRAME,
        AUDIT_LOOKBACK="86400",
    )
    requests = {days: audit_request([symbol], TIMEFRAME) for days, symbol in series.items()}
    for req in requests.values():  # warm-up
        await timed_audit(replica.stub, req)

    per_trial: dict[int, list[float]] = {short_days: [], long_days: []}
    expected: dict[int, int] = {}
    for trial in range(sz.trials):
        times: dict[int, list[float]] = {short_days: [], long_days: []}
        for i in range(sz.incremental_repeats):
            order = (short_days, long_days) if (trial + i) % 2 == 0 else (long_days, short_days)
            for days in order:
                took, reply = await timed_audit(replica.stub, requests[days])
                times[days].append(took)
                expected[days] = reply.cycle.series[0].expected_candles
        for days in times:
            per_trial[days].append(median(times[days]))
    short_s, long_s = median(per_trial[short_days]), median(per_trial[long_days])
    r = ratio(long_s, short_s)
    return result(
        target=TARGET,
        summary=(
            f"cycle over the last day: {short_s * 1000:.0f} ms with {short_days} d of history, "
            f"{long_s * 1000:.0f} ms with {long_days} d"
        ),
        verdict=verdict_at_most(r, 1.2),
        ratio=r,
        ratio_of=f"{long_days} d history / {short_days} d history (median cycle time)",
        details={
            "documents": {f"{d} d": n for d, n in docs.items()},
            "window_slots": {f"{d} d": n for d, n in expected.items()},
            "cycle_ms_short": [rounded(x * 1000, 1) for x in per_trial[short_days]],
            "cycle_ms_long": [rounded(x * 1000, 1) for x in per_trial[long_days]],
            "repeats_per_trial": sz.incremental_repeats,
        },
    )
