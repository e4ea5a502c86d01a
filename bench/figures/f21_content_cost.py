"""21. Candle content cost: cycles with the checks vs without, and the leader's CPU tailing.

* **Cycles.** ``symbols`` 1m series of ``days`` of market-like candles
  (auditsvc.devtools.market_data, one fault of each single-series rule injected
  per series by fault_injection, so the checks have findings to store), one
  collection per symbol as figure 1. Two standalone replicas on the same
  database, one with ENABLE_CONTENT_CHECKS=false, one with true; RunAudit of the
  whole range on each, and figure 1's bare scan (``f1_throughput.baseline``), in
  ABBA order over ``trials``. Ratios of medians: checks on / off, and checks on /
  bare scan (figure 1's target, with the checks on).
* **Leader CPU.** As figure 11 (one standalone replica tailing
  ``live_cost_series[-1]`` 1s series in ``klines_1s``, market-like candles, one
  insert per series per second, AUDIT_INGEST_GRACE=10), with the checks on in
  each mode and off in change_stream mode for reference: the replica's user +
  system CPU over ``live_cost_seconds`` after every series is stored LIVE.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import psutil

from auditsvc.devtools.fault_injection import inject
from auditsvc.devtools.market_data import generate
from auditsvc.domain.timeframes import parse_timeframe
from bench import live, seed
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, audit_request, result, timed_audit
from bench.figures.f1_throughput import baseline
from bench.stats import median, ratio, rounded

KEY = "content_cost"
TITLE = "Candle content cost (cycles with / without the checks, leader CPU tailing)"
TARGET = (
    "RunAudit with the checks / without <= 1.3; with the checks / figure 1's bare scan "
    "<= 1.2; leader CPU tailing the largest count of 1s series with the checks <= 0.5 core"
)
CYCLE_LIMIT, SCAN_LIMIT, CPU_LIMIT = 1.3, 1.2, 0.5
M1 = parse_timeframe("1m")
GRACE_S = 10.0
WARMUP_S = 3.0
ALL_LIVE_WITHIN_S = 120.0


async def run(ctx: Context) -> dict[str, Any]:
    cycles = await _cycles(ctx)
    await ctx.cleanup()
    tiny = ctx.sizes.live_series < 50
    runs = [("change_stream", True), ("change_stream", False)]
    if not tiny:
        runs.insert(0, ("poll", True))
    cpu: dict[str, float] = {}
    missing: dict[str, str] = {}
    for mode, checks in runs:
        label = f"{mode}_{'on' if checks else 'off'}"
        try:
            cpu[label] = await _cpu(ctx, mode, checks)
        except NotMeasured as exc:
            missing[label] = str(exc)
            cpu[label] = math.nan
        await ctx.cleanup()
    on = [c for label, c in cpu.items() if label.endswith("_on")]
    worst_cpu = math.nan if any(math.isnan(c) for c in on) else max(on)
    ratios = [
        cycles["on_off"] / CYCLE_LIMIT,
        cycles["on_scan"] / SCAN_LIMIT,
        worst_cpu / CPU_LIMIT,
    ]
    worst = math.nan if any(math.isnan(r) for r in ratios) else max(ratios)
    return result(
        target=TARGET,
        summary=(
            f"{cycles['candles']:,} candles: on/off {cycles['on_off']:.2f}, on/scan "
            f"{cycles['on_scan']:.2f} (off/scan {cycles['off_scan']:.2f}); "
            f"{ctx.sizes.live_cost_series[-1]} series tailed: "
            + ", ".join(f"{label} {c:.2f} core" for label, c in cpu.items())
        ),
        verdict=MET if not math.isnan(worst) and worst <= 1.0 else MISSED,
        ratio=worst,
        ratio_of="worst of on/off / 1.3, on/scan / 1.2, CPU / 0.5 core",
        details={
            **{k: v for k, v in cycles.items() if k != "candles"},
            "candles": cycles["candles"],
            "leader_cpu_cores": {k: rounded(v) for k, v in cpu.items()},
            "seconds_measured": ctx.sizes.live_cost_seconds,
            "not_measured": missing,
        },
    )


async def _cycles(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    name = ctx.database("content_cycles")
    db = ctx.client[name]
    symbols = [f"CC{i:02d}USDT" for i in range(sz.symbols)]
    slots = seed.slots_for("1m", sz.days)
    start_ms, end_ms = seed.window(seed.FIXED_END_MS, "1m", slots)
    for i, sym in enumerate(symbols):
        clean = generate(100 + i, M1, start_ms, slots)
        # Tiny series are too short for every fault: clean data then.
        faulty = clean if slots < 2000 else inject(clean, M1, end_ms, 7 + i, 1).candles
        docs = [
            {
                "symbol": sym,
                "timestamp": live.candle_doc(sym, c)["timestamp"],
                **{k: getattr(c, k) for k in ("open", "high", "low", "close", "volume")},
            }
            for c in faulty
        ]
        await seed.insert(db, f"candles_{sym}_1m", docs)
        await seed.index(db, f"candles_{sym}_1m")
    env = {"AUDIT_SYMBOLS": ",".join(symbols), "AUDIT_TIMEFRAMES": "1m"}
    replicas = {
        "off": await ctx.replica("cc-off", name, **env, ENABLE_CONTENT_CHECKS="false"),
        "on": await ctx.replica("cc-on", name, **env, ENABLE_CONTENT_CHECKS="true"),
    }
    req = audit_request(symbols, "1m", start_ms, end_ms)
    warm = audit_request(symbols, "1m", end_ms - 3_600_000, end_ms)
    for r in replicas.values():
        await timed_audit(r.stub, warm)
    await baseline(db, symbols, end_ms - 3_600_000, end_ms)
    times: dict[str, list[float]] = {"off": [], "on": [], "scan": []}
    found = 0
    scanned = 0
    for trial in range(sz.trials):
        order = ("scan", "off", "on") if trial % 2 == 0 else ("on", "off", "scan")
        for side in order:
            if side == "scan":
                took, scanned = await baseline(db, symbols, start_ms, end_ms)
            else:
                took, reply = await timed_audit(replicas[side].stub, req)
                if side == "on":
                    found = sum(s.health.anomaly_count for s in reply.cycle.series)
            times[side].append(took)
    on, off, scan = (median(times[k]) for k in ("on", "off", "scan"))
    return {
        "candles": scanned,
        "on_off": ratio(on, off),
        "on_scan": ratio(on, scan),
        "off_scan": ratio(off, scan),
        "audit_seconds": {k: [rounded(x) for x in v] for k, v in times.items()},
        "findings_in_checked_cycle": found,
    }


async def _cpu(ctx: Context, mode: str, checks: bool) -> float:
    """Leader CPU cores in steady state (figure 11's measurement)."""
    n = ctx.sizes.live_cost_series[-1]
    name = ctx.database(f"content_cpu_{mode}_{int(checks)}")
    syms = live.symbols(n, prefix="K")
    feed = live.Feed(ctx.client[name], syms)
    await feed.prime(3)
    feed.start()
    try:
        env = {
            **live.live_env(syms, mode, 1.0),
            "AUDIT_INGEST_GRACE": f"{GRACE_S:g}",
            "ENABLE_CONTENT_CHECKS": "true" if checks else "false",
        }
        replica = await ctx.replica(f"ccpu-{mode}-{int(checks)}", name, **env)
        try:
            await live.until_all_live(replica.stub, n, ALL_LIVE_WITHIN_S)
        except TimeoutError as exc:
            raise NotMeasured(f"{mode}, {n} series: {exc}") from None
        await asyncio.sleep(min(WARMUP_S, ctx.sizes.live_cost_seconds))
        proc = psutil.Process(replica.pid)
        before = proc.cpu_times()
        began = time.monotonic()
        await asyncio.sleep(ctx.sizes.live_cost_seconds)
        after = proc.cpu_times()
        span = time.monotonic() - began
        return float(after.user + after.system - before.user - before.system) / span
    finally:
        await feed.close()
