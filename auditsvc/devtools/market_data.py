"""Market-like OHLCV series for the tests and the bench, deterministic by seed.

What it models, because each is what a content rule must not mistake for a fault:

* heavy-tailed moves: each candle is ``ticks_per_candle`` tick moves drawn from a
  Student-t (``tail_df`` degrees of freedom) with unit variance;
* volatility clustering: the log of the volatility follows an AR(1) with a
  half-life of ``vol_half_life_min`` minutes and a stationary spread of
  ``vol_dispersion``;
* quiet illiquid stretches: runs of flat candles (open = high = low = close) whose
  volume is small and varies, with the odd short run of zero-volume candles (no
  trade at all), shorter than the frozen-feed threshold;
* real jumps of ``jump_size`` that persist (never reverted by the next candle);
* consistent OHLCV across timeframes: :func:`aggregate_up` builds each higher
  series from the base one with the exchange's own aggregation.

Guarantees: the same arguments give the same candles (``random.Random(seed)``,
no global state); every candle passes every exact rule (valid prices and
volumes, aligned open times, Binance close times, trades > 0 iff volume > 0,
taker-buy volume <= volume, quote volume / volume within [low, high]).

Limits: a model, not a market: no intraday seasonality, no order book, one
symbol at a time; prices are rounded to seven significant digits (a tick that
follows the price).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from auditsvc.domain.aggregates import aggregate, child_opens, tiles
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import Timeframe

_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class MarketModel:
    """Parameters of the generated market; the defaults look like a liquid crypto pair."""

    start_price: float = 30_000.0
    minute_vol: float = 0.0007
    """Typical standard deviation of a one-minute log return."""
    tail_df: float = 3.0
    vol_half_life_min: float = 240.0
    vol_dispersion: float = 0.5
    ticks_per_candle: int = 6
    base_volume_per_min: float = 5.0
    quiet_start_prob: float = 0.003
    """Per candle: the chance a quiet stretch begins."""
    quiet_len: tuple[int, int] = (20, 240)
    quiet_zero_volume_prob: float = 0.15
    """Per quiet candle: the chance nobody trades (volume 0), in runs of at most 5."""
    jump_prob_per_min: float = 0.0002
    jump_size: tuple[float, float] = (0.03, 0.15)


def _student_t(rng: random.Random, df: float) -> float:
    """A Student-t draw scaled to unit variance (df > 2)."""
    chi2 = rng.gammavariate(df / 2, 2.0)
    return rng.gauss(0.0, 1.0) / math.sqrt(chi2 / df) * math.sqrt((df - 2) / df)


class _Market:
    """The latent state walking forward one candle at a time."""

    def __init__(self, rng: random.Random, tf: Timeframe, model: MarketModel) -> None:
        self.rng, self.tf, self.m = rng, tf, model
        minutes = tf.nominal_ms / _MINUTE_MS
        self.minutes = minutes
        self.phi = 0.5 ** (minutes / model.vol_half_life_min)
        self.eta = model.vol_dispersion * math.sqrt(1 - self.phi**2)
        self.h = rng.gauss(0.0, model.vol_dispersion)
        self.price = model.start_price
        self.jump_p = 1 - (1 - model.jump_prob_per_min) ** minutes
        self.quiet_left = 0
        self.zero_run = 0
        self.since_jump = 100

    def _round(self, p: float) -> float:
        # Seven significant digits, as an exchange re-sets a symbol's tick with its price:
        # a fixed tick quantises a price that wandered far below its start (a long 1d
        # series drifts by e^10 either way) into moves of tens of percent, a market
        # no rule is meant for.
        tick = 10.0 ** (math.floor(math.log10(p)) - 6)
        return round(p / tick) * tick

    def candle(self, open_ms: int) -> Candle:
        rng, m = self.rng, self.m
        self.h = self.phi * self.h + self.eta * rng.gauss(0.0, 1.0)
        sigma = m.minute_vol * math.sqrt(self.minutes) * math.exp(self.h)
        if self.quiet_left == 0 and rng.random() < m.quiet_start_prob:
            self.quiet_left = rng.randint(*m.quiet_len)
        close_ms = self.tf.next_open(open_ms) - 1
        if self.quiet_left:
            self.quiet_left -= 1
            return self._flat(open_ms, close_ms)
        self.zero_run = 0
        n = m.ticks_per_candle
        jump_at = -1
        self.since_jump += 1
        if self.since_jump > 10 and rng.random() < self.jump_p:
            jump_at, self.since_jump = rng.randrange(n), 0
        prices = []
        p = self.price
        for i in range(n):
            r = sigma / math.sqrt(n) * _student_t(rng, m.tail_df)
            if i == jump_at:
                r += rng.choice((-1, 1)) * math.log1p(rng.uniform(*m.jump_size))
            p = self._round(p * math.exp(r))
            prices.append(p)
        self.price = prices[-1]
        volume = m.base_volume_per_min * self.minutes * math.exp(self.h / 2 + rng.gauss(0, 0.5))
        return self._priced(open_ms, close_ms, prices, round(volume, 8) or 1e-8)

    def _flat(self, open_ms: int, close_ms: int) -> Candle:
        rng, p = self.rng, self.price
        if self.zero_run < 5 and rng.random() < self.m.quiet_zero_volume_prob:
            self.zero_run += 1
            return Candle(open_ms, p, p, p, p, 0.0, close_ms, 0, 0.0, 0.0)
        self.zero_run = 0
        volume = round(0.05 * self.m.base_volume_per_min * rng.lognormvariate(0, 1), 8) or 1e-8
        return self._priced(open_ms, close_ms, [p], volume)

    def _priced(self, open_ms: int, close_ms: int, prices: list[float], volume: float) -> Candle:
        rng = self.rng
        weights = [rng.random() + 0.01 for _ in prices]
        vwap = math.fsum(p * w for p, w in zip(prices, weights, strict=True)) / math.fsum(weights)
        lo, hi = min(prices), max(prices)
        vwap = min(max(vwap, lo), hi)
        trades = max(1, round(volume / 0.05 * rng.uniform(0.5, 1.5)))
        taker = round(volume * rng.uniform(0.1, 0.9), 8)
        return Candle(
            open_ms, prices[0], hi, lo, prices[-1], volume, close_ms, trades, taker, vwap * volume
        )


def generate(
    seed: int, tf: Timeframe, start_ms: int, count: int, model: MarketModel | None = None
) -> list[Candle]:
    """``count`` consecutive candles of ``tf`` from the aligned ``start_ms``."""
    market = _Market(random.Random(seed), tf, model or MarketModel())
    out = []
    t = tf.ceil(start_ms)
    for _ in range(count):
        out.append(market.candle(t))
        t = tf.next_open(t)
    return out


def aggregate_up(candles: Sequence[Candle], child: Timeframe, higher: Timeframe) -> list[Candle]:
    """The complete ``higher`` candles the ascending ``child`` candles add up to.

    Only higher slots whose every child is present are built; their close time is
    the Binance one (next open - 1 ms).
    """
    if not tiles(child, higher):
        raise ValueError(f"{child.name} does not tile {higher.name}")
    by_open = {c.open_time_ms: c for c in candles}
    if not candles:
        return []
    out = []
    t = higher.ceil(candles[0].open_time_ms)
    end = candles[-1].open_time_ms
    while t <= end:
        opens = child_opens(higher, child, t)
        if all(o in by_open for o in opens):
            agg = aggregate([by_open[o] for o in opens], t)
            close_ms = higher.next_open(t) - 1
            out.append(
                Candle(
                    agg.open_time_ms,
                    agg.open,
                    agg.high,
                    agg.low,
                    agg.close,
                    agg.volume,
                    close_ms,
                    agg.trade_count,
                    agg.taker_buy_volume,
                    agg.quote_volume,
                )
            )
        t = higher.next_open(t)
    return out
