"""Faults injected into generated candles at random positions, with the ground truth.

Each injection breaks exactly one content rule and leaves every other rule
satisfied (a lowered high also lowers the quote VWAP with it, a scaled volume
scales the quote and taker-buy volumes), so the truth is one rule per faulty
candle and a finding of any other rule is a false positive. Positions are drawn
from ``random.Random(seed)`` after a warm-up of ``warmup`` candles, never at the
last candles, and with ``margin`` clean candles between two faults, so that a
spike has clean neighbours and a frozen run's ends are unambiguous.

Limits: spikes are drawn log-uniformly between ``spike_factor`` and 10x (or
their inverse): above the rule's 10 % floor, but on daily candles in a volatile
stretch the threshold (``spike_multiple`` x the median daily move) can exceed the
smallest of them, and those are missed (bench figure 19 counts them);
TIME_IN_FUTURE moves the candle at least ten slots past ``now_ms`` and sorts it
to the end of the series, leaving a gap where it was.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import Timeframe

R = AnomalyRule
# Rules injected into one series; AGGREGATE_MISMATCH goes into a higher one.
SERIES_RULES: tuple[AnomalyRule, ...] = tuple(r for r in R if r is not R.AGGREGATE_MISMATCH)


@dataclass(frozen=True, slots=True)
class Injected:
    """A faulty series, ascending by open time, and what was broken where."""

    candles: list[Candle]
    truth: dict[int, AnomalyRule]  # open time of a faulty candle -> its rule


@dataclass
class _Plan:
    rng: random.Random
    candles: list[Candle]
    tf: Timeframe
    now_ms: int
    used: set[int]
    truth: dict[int, AnomalyRule]
    future_slots: int = 10


def _normal(c: Candle) -> bool:
    """A candle with trades and a body, so every fault can be made from it."""
    return bool(c.volume) and c.open != c.close


def _pick(p: _Plan, span: int, margin: int, lo: int, ok: Callable[[int], bool]) -> int:
    n = len(p.candles)
    for _ in range(10_000):
        i = p.rng.randrange(lo, n - span - margin)
        window = range(i - margin, i + span + margin)
        if any(j in p.used for j in window):
            continue
        if not ok(i):
            continue
        p.used.update(window)
        return i
    raise ValueError("series too short for the faults asked for")


def _set(p: _Plan, i: int, rule: AnomalyRule, **changes: object) -> None:
    c = dataclasses.replace(p.candles[i], **changes)  # type: ignore[arg-type]
    p.candles[i] = c
    p.truth[c.open_time_ms] = rule


def _exact(p: _Plan, rule: AnomalyRule, i: int) -> None:
    rng, c = p.rng, p.candles[i]
    assert c.open is not None and c.close is not None and c.volume and c.quote_volume
    assert c.high is not None and c.low is not None
    top, bottom, vwap = max(c.open, c.close), min(c.open, c.close), c.quote_volume / c.volume
    if rule is R.PRICE_INVALID:
        name = rng.choice(("open", "high", "low", "close"))
        bad = rng.choice((None, math.nan, math.inf, 0.0, -c.close))
        _set(p, i, rule, **{name: bad})
    elif rule is R.HIGH_BELOW_BODY:
        high = top - rng.uniform(0.1, 1.0) * (top - bottom)
        _set(p, i, rule, high=high, quote_volume=min(vwap, high) * c.volume)
    elif rule is R.LOW_ABOVE_BODY:
        low = bottom + rng.uniform(0.1, 1.0) * (top - bottom)
        _set(p, i, rule, low=low, quote_volume=max(vwap, low) * c.volume)
    elif rule is R.VOLUME_INVALID:
        _set(p, i, rule, volume=rng.choice((None, math.nan, math.inf, -c.volume)))
    elif rule is R.TIME_MISALIGNED:
        length = p.tf.next_open(c.open_time_ms) - c.open_time_ms
        _set(p, i, rule, open_time_ms=c.open_time_ms + rng.randrange(1, length))
    elif rule is R.TIME_IN_FUTURE:
        # Far apart, so two future candles are never neighbours.
        t = p.tf.shift(p.tf.floor(p.now_ms), p.future_slots)
        p.future_slots += 10
        _set(p, i, rule, open_time_ms=t, close_time_ms=p.tf.next_open(t) - 1)
    elif rule is R.CLOSE_TIME_INVALID:
        assert c.close_time_ms is not None
        bad = rng.choice((c.close_time_ms + 1, c.close_time_ms * 1000, c.open_time_ms))
        _set(p, i, rule, close_time_ms=bad)
    elif rule is R.TRADES_WITHOUT_VOLUME:
        _set(p, i, rule, trade_count=0)
    elif rule is R.TAKER_ABOVE_VOLUME:
        _set(p, i, rule, taker_buy_volume=c.volume * (1 + rng.uniform(1e-3, 1.0)))
    elif rule is R.QUOTE_VOLUME_OUTSIDE_RANGE:
        off = rng.uniform(1e-3, 0.5)
        price = c.high * (1 + off) if rng.random() < 0.5 else c.low * (1 - off)
        _set(p, i, rule, quote_volume=price * c.volume)


def _spike(p: _Plan, i: int, min_factor: float) -> None:
    rng, c = p.rng, p.candles[i]
    assert c.open and c.high and c.low and c.close and c.quote_volume is not None
    f = math.exp(rng.uniform(math.log(min_factor), math.log(10.0)))
    kind = rng.choice(("wick", "close", "whole"))
    if rng.random() < 0.5:  # down: the same shapes, divided
        f = 1 / f
    up = f > 1
    if kind == "wick":
        changes: dict[str, object] = {"high": c.high * f} if up else {"low": c.low * f}
    elif kind == "close":
        changes = {"close": c.close * f, ("high" if up else "low"): (c.high if up else c.low) * f}
    else:
        changes = {
            "open": c.open * f,
            "high": c.high * f,
            "low": c.low * f,
            "close": c.close * f,
            "quote_volume": c.quote_volume * f,
        }
    _set(p, i, R.PRICE_SPIKE, **changes)


def _frozen(p: _Plan, i: int, length: int) -> None:
    rng, prev = p.rng, p.candles[i - 1]
    zero = rng.random() < 0.5
    for j in range(i, i + length):
        c = p.candles[j]
        if zero:
            px = prev.close
            flat = {"open": px, "high": px, "low": px, "close": px}
            nil = {"volume": 0.0, "trade_count": 0, "taker_buy_volume": 0.0, "quote_volume": 0.0}
            _set(p, j, R.FROZEN_FEED, **flat, **nil)
        else:
            times = {"open_time_ms": c.open_time_ms, "close_time_ms": c.close_time_ms}
            p.candles[j] = dataclasses.replace(prev, **times)  # type: ignore[arg-type]
            p.truth[c.open_time_ms] = R.FROZEN_FEED


def _traded_around(cs: list[Candle], n: int) -> Callable[[int], bool]:
    return lambda i: bool(cs[i - 1].volume) and bool(cs[i + n].volume)


def inject(
    candles: Iterable[Candle],
    tf: Timeframe,
    now_ms: int,
    seed: int,
    per_rule: int,
    rules: Iterable[AnomalyRule] = SERIES_RULES,
    *,
    warmup: int = 80,
    margin: int = 3,
    frozen_run: tuple[int, int] = (60, 120),
    spike_factor: float = 1.5,
) -> Injected:
    """``per_rule`` faults of each of ``rules`` in a copy of the clean ``candles``."""
    p = _Plan(random.Random(seed), list(candles), tf, now_ms, set(), {})
    cs = p.candles
    for rule in rules:
        for _ in range(per_rule):
            if rule is R.PRICE_SPIKE:
                _spike(p, _pick(p, 1, margin, warmup, lambda i: _normal(cs[i])), spike_factor)
            elif rule is R.FROZEN_FEED:
                n = p.rng.randint(*frozen_run)
                # Traded candles on both sides, so the run is exactly the injected one.
                ok = _traded_around(cs, n)
                _frozen(p, _pick(p, n, margin, warmup, ok), n)
            elif rule is R.AGGREGATE_MISMATCH:
                raise ValueError("AGGREGATE_MISMATCH goes into a higher series: inject_mismatches")
            else:
                _exact(p, rule, _pick(p, 1, margin, warmup, lambda i: _normal(cs[i])))
    return Injected(sorted(cs, key=lambda c: c.open_time_ms), p.truth)


def inject_mismatches(higher: Iterable[Candle], seed: int, count: int) -> Injected:
    """``count`` higher candles changed so that they no longer equal their children's aggregate.

    One field each: open or close moved to another price within [low, high], high
    raised, low lowered, or volume scaled (with its quote and taker-buy volumes) by
    at least 1 %, so every exact rule still holds. Only candles with a volume are
    changed; ``count`` must not exceed them.
    """
    rng = random.Random(seed)
    clean = list(higher)
    cs = list(clean)
    # A higher candle of zero-volume children has no volume to scale: left out.
    for i in rng.sample([i for i, c in enumerate(cs) if c.volume], count):
        c = cs[i]
        assert c.open and c.high and c.low and c.close and c.volume
        field = rng.choice(("open", "high", "low", "close", "volume"))
        d = rng.uniform(1e-5, 0.05)
        changes: dict[str, object]
        if field in ("open", "close"):
            # The far end of the range from the stored value: a real move inside it.
            value = getattr(c, field)
            target = c.low if value - c.low > c.high - value else c.high
            changes = {field: target}
            if target == value:  # a flat candle: widen it instead
                changes = {"high": c.high * (1 + d)}
        elif field == "high":
            changes = {"high": c.high * (1 + d)}
        elif field == "low":
            changes = {"low": c.low * (1 - d)}
        else:
            k = 1 + rng.choice((-1, 1)) * max(d, 0.01)
            q, tb = c.quote_volume, c.taker_buy_volume
            changes = {
                "volume": c.volume * k,
                "quote_volume": None if q is None else q * k,
                "taker_buy_volume": None if tb is None else tb * k,
            }
        cs[i] = dataclasses.replace(c, **changes)  # type: ignore[arg-type]
    truth = {c.open_time_ms: R.AGGREGATE_MISMATCH for c, o in zip(cs, clean, strict=True) if c != o}
    return Injected(cs, truth)
