"""20. Candle content latency: a bad candle inserted live reaches ListAnomalies on a follower.

Per mode (poll, change_stream): two replicas with election, ``live_series`` 1s
series fed live with market-like candles (bench.live.Feed, Markets) in
``klines_1s``, plus each symbol's 1m series in ``klines_1m``; a follower is polled
with ListAnomalies every 20 ms. Three phases, each on symbols of its own:

* **exact**: the next candle of each chosen symbol is written with one exact fault
  (a zero close, a high below the body, a low above it, a negative volume);
  latency = the finding listed on the follower - the insert's return;
* **aggregates**: each chosen symbol gets the 1m candle of the last closed minute,
  whose sixty 1s children are already stored; half carry a high 1 % above their
  children's (a mismatch), half are exact (no finding expected); latency = listed
  - the 1m insert's return (the last of the set present);
* **spikes**: after every series has ``spike_min_history`` moves in the leader's
  term, the next candle of each chosen symbol gets its high raised 50 % (a wick
  the next candle reverts); latency = listed - the spiked candle's insert return,
  so it includes the one slot the rule waits for the next candle.

Every finding listed that was not injected is a false positive, reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import random
import time
from collections.abc import Callable
from typing import Any

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.aggregates import aggregate
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import parse_timeframe
from bench import cluster, live
from bench.context import Context, NotMeasured
from bench.figures.common import MET, MISSED, ms, result
from bench.stats import latency_ms, percentile, rounded

KEY = "content_latency"
TITLE = "Candle content latency (live tail → ListAnomalies on a follower)"
TARGET = (
    "p99 insert → ListAnomalies on a follower: exact rules <= 1.5 s, spikes <= one slot "
    "+ 1.5 s, 1s → 1m aggregates <= 1.5 s after the last of the set is present; "
    "no false finding; both modes (LIVE_POLL_INTERVAL=1)"
)
LIMITS = {"exact": 1.5, "aggregate": 1.5, "spike": 2.5}
MODES = ("poll", "change_stream")
M1 = parse_timeframe("1m")
FOUND_WITHIN_S = 10.0
ALL_LIVE_WITHIN_S = 120.0
# The candles primed before the replicas start: the last closed minute is whole.
PRIME_S = 125


def _exact_faults() -> list[tuple[str, Callable[[Candle], Candle]]]:
    def high_below(c: Candle) -> Candle:
        assert c.open is not None and c.close is not None
        return dataclasses.replace(c, high=min(c.open, c.close) * 0.999)

    def low_above(c: Candle) -> Candle:
        assert c.open is not None and c.close is not None
        return dataclasses.replace(c, low=max(c.open, c.close) * 1.001)

    return [
        ("PRICE_INVALID", lambda c: dataclasses.replace(c, close=0.0)),
        ("HIGH_BELOW_BODY", high_below),
        ("LOW_ABOVE_BODY", low_above),
        ("VOLUME_INVALID", lambda c: dataclasses.replace(c, volume=-1.0)),
    ]


def _spike(c: Candle) -> Candle:
    assert c.open is not None and c.close is not None and c.high is not None
    return dataclasses.replace(c, high=max(c.open, c.close, c.high) * 1.5)


async def run(ctx: Context) -> dict[str, Any]:
    per_mode: dict[str, dict[str, Any]] = {}
    # Tiny (the smoke test's minute): change streams only.
    for mode in MODES if ctx.sizes.live_series >= 50 else MODES[-1:]:
        try:
            per_mode[mode] = await _one_mode(ctx, mode)
        except NotMeasured as exc:
            per_mode[mode] = {"not_measured": str(exc)}
        await ctx.cleanup()
    ratios: list[float] = []
    parts = []
    for mode, f in per_mode.items():
        if "not_measured" in f:
            ratios.append(math.nan)
            parts.append(f"{mode}: not measured ({f['not_measured'][:120]})")
            continue
        ratios += [f[f"{k}_p99_s"] / limit for k, limit in LIMITS.items()]
        if f["false_findings"] or any(f[f"{k}_missed"] for k in LIMITS):
            ratios.append(math.nan)
        parts.append(
            f"{mode}: exact p99 {f['exact_p99_s']:.2f} s, spike {f['spike_p99_s']:.2f} s, "
            f"aggregate {f['aggregate_p99_s']:.2f} s, false {f['false_findings']}"
        )
    worst = math.nan if any(math.isnan(r) for r in ratios) else max(ratios)
    return result(
        target=TARGET,
        summary=f"{ctx.sizes.live_series} series — " + "; ".join(parts),
        verdict=MET if not math.isnan(worst) and worst <= 1.0 else MISSED,
        ratio=worst,
        ratio_of="worst p99 / its limit",
        details={f"{m}_{k}": v for m, f in per_mode.items() for k, v in f.items()},
    )


async def _one_mode(ctx: Context, mode: str) -> dict[str, Any]:
    sz = ctx.sizes
    tiny = sz.live_series < 50
    name = ctx.database(f"content_{mode}")
    syms = live.symbols(sz.live_series, prefix="Q")
    feed = live.Feed(ctx.client[name], syms)
    await feed.prime(PRIME_S)
    await ctx.client[name]["klines_1m"].create_index([("symbol", 1), ("timestamp", 1)])
    feed.start()
    # Tiny: a short history, so the spikes can be judged within seconds.
    min_history = 3 if tiny else 20
    try:
        env = {
            **cluster.election_env(ctx, syms[0]),
            **live.live_env(syms, mode, 1.0),
            "AUDIT_TIMEFRAMES": "1s,1m",
            "ENABLE_CONTENT_CHECKS": "true",
            "ANOMALY_SPIKE_MIN_HISTORY": str(min_history),
        }
        replicas = [await ctx.replica(f"ct-{mode}-{i}", name, **env) for i in (1, 2)]
        leader = await cluster.leader_of(replicas, cluster.settle_time(ctx))
        follower = next(r for r in replicas if r is not leader)
        try:
            await live.until_all_live(follower.stub, len(syms), ALL_LIVE_WITHIN_S)
        except TimeoutError as exc:
            raise NotMeasured(f"{mode}: {exc}") from None
        term_began, since_ms = time.monotonic(), live.now_ms()
        rng = random.Random(20)
        k = max(2, len(syms) // 10)
        order = rng.sample(syms, len(syms))
        exact_syms, agg_syms, spike_syms = order[:k], order[k : 2 * k], order[2 * k :]
        watch = _Watch(follower.stub)
        figures: dict[str, Any] = {}

        # Aggregates: the last closed minute's 1m candle, whose children are all stored.
        minute = M1.shift(M1.floor(live.now_ms()), -1)
        expected_agg: dict[tuple[str, int, str], int] = {}
        for i, sym in enumerate(agg_syms):
            kids = [c for c in feed.markets.history[sym] if M1.floor(c.open_time_ms) == minute]
            if len(kids) != 60:
                raise NotMeasured(f"{sym}: {len(kids)} children of the last minute generated")
            higher = aggregate(kids, minute)
            bad = i % 2 == 0
            if bad:
                assert higher.high is not None
                higher = dataclasses.replace(higher, high=higher.high * 1.01)
            await ctx.client[name]["klines_1m"].insert_one(live.candle_doc(sym, higher))
            if bad:
                expected_agg[(sym, minute, "AGGREGATE_MISMATCH")] = live.now_ms()
        figures |= await _phase("aggregate", watch, expected_agg)

        # Exact rules: the next candle of each symbol, spoiled, as the feed writes it.
        faults = _exact_faults()
        wanted: dict[str, str] = {}
        for i, sym in enumerate(exact_syms):
            rule, spoil = faults[i % len(faults)]
            wanted[sym] = rule
            feed.tamper[sym] = spoil
        expected_exact = await _written(feed, wanted)
        figures |= await _phase("exact", watch, expected_exact)

        # Spikes: on series whose candles since the leader took office hold enough
        # moves (a quiet stretch has none; a spike there waits for the cycle).
        await asyncio.sleep(
            max(0.0, term_began + min_history + (4 if tiny else 12) - time.monotonic())
        )
        spiky = [s for s in spike_syms if _moving(feed, s, since_ms, min_history + 2)][:k]
        for sym in spiky:
            feed.tamper[sym] = _spike
        expected_spike = await _written(feed, dict.fromkeys(spiky, "PRICE_SPIKE"))
        figures |= await _phase("spike", watch, expected_spike)

        # Whatever else is listed was not injected.
        await asyncio.sleep(2.0)
        listed = await watch.all()
        injected = {*expected_agg, *expected_exact, *expected_spike}
        false = sorted(k for k in listed if k not in injected)
        figures["false_findings"] = len(false)
        figures["false_examples"] = [list(k) for k in false[:5]]
        figures["symbols_per_phase"] = k
        return figures
    finally:
        await feed.close()


def _moving(feed: live.Feed, sym: str, since_ms: int, moves: int) -> bool:
    """Whether the symbol's candles since ``since_ms`` hold ``moves`` non-zero close
    moves (a spike is judged only against moves the leader's term has seen)."""
    closes = [c.close for c in feed.markets.history[sym] if c.open_time_ms >= since_ms]
    return sum(1 for a, b in itertools.pairwise(closes) if a != b) >= moves


async def _written(feed: live.Feed, wanted: dict[str, str]) -> dict[tuple[str, int, str], int]:
    """Waits until the feed has written each spoiled candle; (symbol, open, rule) -> insert ms."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if set(wanted) <= {sym for sym, _ in feed.tampered}:
            break
        await asyncio.sleep(0.01)
    return {(sym, t, wanted[sym]): at for (sym, t), at in feed.tampered.items() if sym in wanted}


async def _phase(
    kind: str, watch: _Watch, expected: dict[tuple[str, int, str], int]
) -> dict[str, Any]:
    seen = await watch.until(set(expected), FOUND_WITHIN_S)
    lat = [(seen[key] - at) / 1000 for key, at in expected.items() if key in seen]
    missed = len(expected) - len(lat)
    return {
        f"{kind}_p99_s": rounded(percentile(lat, 99)) if lat and not missed else math.nan,
        f"{kind}": latency_ms(lat),
        f"{kind}_missed": missed,
        f"{kind}_injected": len(expected),
    }


class _Watch:
    """Polls ListAnomalies on one replica, noting when each finding first appears."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.first: dict[tuple[str, int, str], int] = {}

    async def all(self) -> set[tuple[str, int, str]]:
        found: set[tuple[str, int, str]] = set()
        token = ""
        while True:
            reply = await self._stub.ListAnomalies(
                pb.ListAnomaliesRequest(page_size=1000, page_token=token), timeout=10
            )
            now = live.now_ms()
            for a in reply.anomalies:
                key = (a.symbol, ms(a.open_time), pb.AnomalyRule.Name(a.rule)[13:])
                found.add(key)
                self.first.setdefault(key, now)
            token = reply.next_page_token
            if not token:
                return found

    async def until(
        self, wanted: set[tuple[str, int, str]], within: float
    ) -> dict[tuple[str, int, str], int]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not wanted <= set(self.first):
            await self.all()
            await asyncio.sleep(0.02)
        return {k: self.first[k] for k in wanted if k in self.first}
