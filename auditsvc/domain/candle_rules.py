"""The exact rules: what one candle alone must satisfy, judged at once.

Guarantees:

* :func:`check_candle` is pure and total: it never raises on any values (NaN,
  infinities, ``None``, wrong types) and returns at most one :class:`Anomaly` per
  rule, in :class:`AnomalyRule` order.
* A rule that needs a value another rule found invalid is skipped rather than
  reported twice: the body rules and the quote range need valid prices (the
  quote range also ``low <= high``), and the three volume-consistency rules
  need a valid volume.
* Boundaries are inclusive on the accepting side: ``high == max(open, close)``,
  ``low == min(open, close)``, ``taker_buy_volume == volume``, a quote VWAP equal
  to ``low`` or ``high`` and ``volume == 0`` all pass. Ordering checks allow
  ``price_rel_tol`` for floating point.
* The optional fields (close time, trade count, taker-buy volume, quote volume)
  are only checked when the candle carries them.

Limits: TIME_IN_FUTURE needs the caller's ``now_ms`` (the injected clock). The
rules judge one candle; a wrong but self-consistent candle is for the spike,
frozen-feed and aggregate rules to find.
"""

from __future__ import annotations

import math

from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle, is_number, is_price, is_volume
from auditsvc.domain.timeframes import Timeframe

R = AnomalyRule
_DEFAULT = AnomalyConfig()
_ORDER = {rule: i for i, rule in enumerate(AnomalyRule)}


def _num(value: object) -> float | None:
    """The value as a float for a finding's observed field, when it is one."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _prices(c: Candle) -> list[Anomaly]:
    for name, value in zip(("open", "high", "low", "close"), c.ohlc, strict=True):
        if not is_price(value):
            why = "missing" if value is None else f"{value!r}"
            return [
                Anomaly(
                    c.open_time_ms,
                    R.PRICE_INVALID,
                    f"{name} is {why}; a price must be a finite number > 0",
                    name,
                    _num(value),
                )
            ]
    return []


def _body(c: Candle, tol: float) -> list[Anomaly]:
    # Only called with valid prices.
    o, h, lo, cl = c.open, c.high, c.low, c.close
    assert o is not None and h is not None and lo is not None and cl is not None
    out = []
    top, bottom = max(o, cl), min(o, cl)
    if h < top * (1 - tol):
        out.append(
            Anomaly(
                c.open_time_ms,
                R.HIGH_BELOW_BODY,
                f"high {h!r} is below max(open, close) {top!r}",
                "high",
                h,
                top,
            )
        )
    if lo > bottom * (1 + tol):
        out.append(
            Anomaly(
                c.open_time_ms,
                R.LOW_ABOVE_BODY,
                f"low {lo!r} is above min(open, close) {bottom!r}",
                "low",
                lo,
                bottom,
            )
        )
    return out


def _times(c: Candle, tf: Timeframe, now_ms: int, config: AnomalyConfig) -> list[Anomaly]:
    out = []
    t = c.open_time_ms
    slot = tf.floor(t)
    if slot != t:
        out.append(
            Anomaly(
                t,
                R.TIME_MISALIGNED,
                f"open time {t} is not a {tf.name} open time (slot opens at {slot})",
                "open_time",
                float(t),
                float(slot),
            )
        )
    # The latest acceptable open: the slot after the one forming now, plus the grace
    # (a writer's clock may run slightly ahead of ours).
    current = tf.floor(now_ms)
    latest = now_ms + (tf.next_open(current) - current) + config.future_grace_ms
    if t > latest:
        out.append(
            Anomaly(
                t,
                R.TIME_IN_FUTURE,
                f"open time {t} is {t - now_ms} ms past now, more than one {tf.name} slot + grace",
                "open_time",
                float(t),
                float(latest),
            )
        )
    if c.close_time_ms is not None:
        expected = tf.next_open(slot) + config.close_time_offset_ms
        if c.close_time_ms != expected:
            out.append(
                Anomaly(
                    t,
                    R.CLOSE_TIME_INVALID,
                    f"close time {c.close_time_ms!r} should be {expected}",
                    "close_time",
                    _num(c.close_time_ms),
                    float(expected),
                )
            )
    return out


def _trades(c: Candle, volume: float) -> list[Anomaly]:
    n = c.trade_count
    if n is None:
        return []
    # A trade has a positive quantity: no trades <=> no volume.
    if not is_number(n) or n < 0 or (n == 0) != (volume == 0):
        return [
            Anomaly(
                c.open_time_ms,
                R.TRADES_WITHOUT_VOLUME,
                f"trade count {n!r} with volume {volume!r}: zero trades must mean zero volume",
                "trade_count",
                _num(n),
            )
        ]
    return []


def _taker(c: Candle, volume: float, tol: float) -> list[Anomaly]:
    taker = c.taker_buy_volume
    if taker is None:
        return []
    if not is_volume(taker) or taker > volume * (1 + tol):
        return [
            Anomaly(
                c.open_time_ms,
                R.TAKER_ABOVE_VOLUME,
                f"taker-buy volume {taker!r} is outside [0, volume {volume!r}]",
                "taker_buy_volume",
                _num(taker),
                volume,
            )
        ]
    return []


def _quote(c: Candle, volume: float, tol: float) -> list[Anomaly]:
    quote, lo, hi = c.quote_volume, c.low, c.high
    if quote is None:
        return []
    assert lo is not None and hi is not None  # only called with valid prices
    if hi < lo:
        return []  # no range to lie in; the body rules have reported the candle
    if not is_volume(quote):
        why = f"quote volume {quote!r} is not a finite number >= 0"
        return [Anomaly(c.open_time_ms, R.QUOTE_VOLUME_OUTSIDE_RANGE, why, "quote_volume")]
    if volume == 0:
        if quote == 0:
            return []
        why = f"quote volume {quote!r} with zero volume"
        return [
            Anomaly(c.open_time_ms, R.QUOTE_VOLUME_OUTSIDE_RANGE, why, "quote_volume", quote, 0.0)
        ]
    vwap = quote / volume
    if lo * (1 - tol) <= vwap <= hi * (1 + tol):
        return []
    expected = lo if vwap < lo else hi
    why = f"quote volume / volume = {vwap!r} lies outside [low {lo!r}, high {hi!r}]"
    return [
        Anomaly(c.open_time_ms, R.QUOTE_VOLUME_OUTSIDE_RANGE, why, "quote_volume", vwap, expected)
    ]


def _plainly_clean(c: Candle, tf: Timeframe, now_ms: int, config: AnomalyConfig) -> bool:
    """A sufficient condition for no exact finding, in plain comparisons of floats.

    Stricter than the rules (floats only, no tolerance; NaN fails every comparison),
    so True is always right and False only sends the candle to the full rules. Why:
    nearly every candle is clean, and this is several times faster than the rules.
    ``tests/unit/test_candle_rules.py`` checks that both give the same answer.
    """
    o, h, lo, cl, v = c.open, c.high, c.low, c.close, c.volume
    if not (type(o) is type(h) is type(lo) is type(cl) is type(v) is float):
        return False
    assert o is not None and h is not None and lo is not None and cl is not None and v is not None
    if not (0.0 < lo <= o <= h < math.inf and lo <= cl <= h and 0.0 <= v < math.inf):
        return False
    t = c.open_time_ms
    current = tf.floor(now_ms)
    if tf.floor(t) != t or t > now_ms + tf.next_open(current) - current + config.future_grace_ms:
        return False
    ct, n, tb, q = c.close_time_ms, c.trade_count, c.taker_buy_volume, c.quote_volume
    if ct is not None and ct != tf.next_open(t) + config.close_time_offset_ms:
        return False
    if n is not None and not (type(n) is int and n >= 0 and (n == 0) == (v == 0.0)):
        return False
    if tb is not None and not (type(tb) is float and 0.0 <= tb <= v):
        return False
    if q is None:
        return True
    if type(q) is not float:
        return False
    return q == 0.0 if v == 0.0 else lo <= q / v <= h


def check_candle(
    candle: Candle, tf: Timeframe, now_ms: int, config: AnomalyConfig | None = None
) -> list[Anomaly]:
    """Every exact-rule finding on ``candle`` of a ``tf`` series, judged at ``now_ms``."""
    config = config or _DEFAULT
    if _plainly_clean(candle, tf, now_ms, config):
        return []
    return all_rules(candle, tf, now_ms, config)


def all_rules(candle: Candle, tf: Timeframe, now_ms: int, config: AnomalyConfig) -> list[Anomaly]:
    """:func:`check_candle` without its fast path for clean candles (the tests compare them)."""
    out = _prices(candle)
    prices_ok = not out
    if prices_ok:
        out += _body(candle, config.price_rel_tol)
    volume = candle.volume
    if not is_volume(volume):
        why = "missing" if volume is None else f"{volume!r}"
        out.append(
            Anomaly(
                candle.open_time_ms,
                R.VOLUME_INVALID,
                f"volume is {why}; it must be a finite number >= 0",
                "volume",
                _num(volume),
            )
        )
    out += _times(candle, tf, now_ms, config)
    if is_volume(volume):
        assert volume is not None
        out += _trades(candle, volume)
        out += _taker(candle, volume, config.price_rel_tol)
        if prices_ok:
            out += _quote(candle, volume, config.quote_rel_tol)
    return sorted(out, key=lambda a: _ORDER[a.rule])
