"""Binance kline timeframes and the slot arithmetic the audit needs.

Guarantees:

* Parsing is exact and case-sensitive (``1m`` is a minute, ``1M`` a month);
  anything else raises :class:`InvalidArgument` with ``field="timeframe"``.
* Fixed timeframes from ``1s`` up to ``3d`` open on multiples of their length since the
  Unix epoch; ``1w`` opens on Monday 00:00 UTC; ``1M`` opens at 00:00 UTC on
  the first day of each calendar month.
* Every operation uses floor semantics, so instants before 1970 work too.
* Fixed timeframes use integer arithmetic only; ``count_slots`` is O(1) for
  every timeframe.

Limits: ``1M`` arithmetic goes through :mod:`datetime`, so it only covers
years 1 to 9999 (out-of-range instants raise ``ValueError``/``OverflowError``).
``nominal_ms`` of ``1M`` is 30 days; it sizes lookbacks and freshness only and
never decides alignment.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.values import Window

_SECOND_MS = 1_000
_MINUTE_MS = 60 * _SECOND_MS
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
_WEEK_MS = 7 * _DAY_MS
# 1970-01-01 was a Thursday; the first Monday is four days later.
_WEEK_OFFSET_MS = 4 * _DAY_MS
_MONTH = "1M"
_WEEK = "1w"

_NOMINAL_MS: dict[str, int] = {
    "1s": _SECOND_MS,
    "1m": _MINUTE_MS,
    "3m": 3 * _MINUTE_MS,
    "5m": 5 * _MINUTE_MS,
    "15m": 15 * _MINUTE_MS,
    "30m": 30 * _MINUTE_MS,
    "1h": _HOUR_MS,
    "2h": 2 * _HOUR_MS,
    "4h": 4 * _HOUR_MS,
    "6h": 6 * _HOUR_MS,
    "8h": 8 * _HOUR_MS,
    "12h": 12 * _HOUR_MS,
    "1d": _DAY_MS,
    "3d": 3 * _DAY_MS,
    "1w": _WEEK_MS,
    "1M": 30 * _DAY_MS,
}

TIMEFRAMES: tuple[str, ...] = tuple(_NOMINAL_MS)

_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def _month_index(t_ms: int) -> int:
    """Months since year 0 of the calendar month containing ``t_ms``."""
    d = _dt.date.fromordinal(_EPOCH_ORDINAL + t_ms // _DAY_MS)
    return d.year * 12 + d.month - 1


def _month_open(index: int) -> int:
    year, month0 = divmod(index, 12)
    return (_dt.date(year, month0 + 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY_MS


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One timeframe. Obtain instances with :func:`parse_timeframe`."""

    name: str
    nominal_ms: int

    def __post_init__(self) -> None:
        if _NOMINAL_MS.get(self.name) != self.nominal_ms:
            raise ValueError(f"inconsistent timeframe {self.name!r}/{self.nominal_ms}")

    @property
    def fixed_ms(self) -> int | None:
        """Slot length when every slot has the same length, else None (``1M``)."""
        return None if self.name == _MONTH else self.nominal_ms

    @property
    def offset_ms(self) -> int:
        """Fixed slots open at ``offset_ms + k * fixed_ms``; 0 for ``1M``."""
        return _WEEK_OFFSET_MS if self.name == _WEEK else 0

    def floor(self, t_ms: int) -> int:
        if self.name == _MONTH:
            return _month_open(_month_index(t_ms))
        return t_ms - (t_ms - self.offset_ms) % self.nominal_ms

    def ceil(self, t_ms: int) -> int:
        f = self.floor(t_ms)
        return f if f == t_ms else self.next_open(t_ms)

    def next_open(self, t_ms: int) -> int:
        if self.name == _MONTH:
            return _month_open(_month_index(t_ms) + 1)
        return self.floor(t_ms) + self.nominal_ms

    def is_aligned(self, t_ms: int) -> bool:
        return self.floor(t_ms) == t_ms

    def count_slots(self, start_ms: int, end_ms: int) -> int:
        """Number of open times ``t`` with ``start_ms <= t < end_ms``."""
        if end_ms <= start_ms:
            return 0
        if self.name == _MONTH:
            first = _month_index(start_ms)
            if _month_open(first) != start_ms:
                first += 1
            return max(0, _month_index(end_ms - 1) - first + 1)
        step, off = self.nominal_ms, self.offset_ms
        first = -((off - start_ms) // step)  # ceil((start - off) / step)
        last = (end_ms - 1 - off) // step
        return max(0, last - first + 1)

    def shift(self, t_ms: int, n: int) -> int:
        """Open time ``n`` slots after the aligned ``t_ms``; ValueError if unaligned."""
        if self.name == _MONTH:
            index = _month_index(t_ms)
            if _month_open(index) != t_ms:
                raise ValueError(f"{t_ms} is not a {self.name} open time")
            return _month_open(index + n)
        if (t_ms - self.offset_ms) % self.nominal_ms:
            raise ValueError(f"{t_ms} is not a {self.name} open time")
        return t_ms + n * self.nominal_ms

    def iter_opens(self, start_ms: int, end_ms: int) -> Iterator[int]:
        """Open times ``t`` with ``start_ms <= t < end_ms``, ascending."""
        if end_ms <= start_ms:
            return
        if self.name != _MONTH:
            yield from range(self.ceil(start_ms), end_ms, self.nominal_ms)
            return
        index = _month_index(start_ms)
        t = _month_open(index)
        if t < start_ms:
            index += 1
            t = _month_open(index)
        while t < end_ms:
            yield t
            index += 1
            t = _month_open(index)


_CACHE: dict[str, Timeframe] = {name: Timeframe(name, ms) for name, ms in _NOMINAL_MS.items()}
_ACCEPTED = ", ".join(TIMEFRAMES)


def parse_timeframe(name: str) -> Timeframe:
    """The cached :class:`Timeframe` called ``name`` (case-sensitive)."""
    tf = _CACHE.get(name)
    if tf is None:
        raise InvalidArgument(
            f"unknown timeframe {name!r}; accepted: {_ACCEPTED}", field="timeframe"
        )
    return tf


def settled_end(tf: Timeframe, now_ms: int, grace_ms: int = 0) -> int:
    """The exclusive end of the slots that are due at ``now_ms``.

    A slot is due (expected to be stored) once its close plus the ingest
    ``grace_ms`` has passed. Every slot opening before the returned instant is
    due; the slot opening at it is not. With ``grace_ms=0`` this is the open of
    the slot still forming. Negative ``grace_ms`` raises ValueError.
    """
    if grace_ms < 0:
        raise ValueError("grace_ms must be >= 0")
    return tf.floor(now_ms - grace_ms)


def default_window(
    tf: Timeframe, now_ms: int, lookback_s: int, min_candles: int, grace_ms: int = 0
) -> Window:
    """The window of due slots ending at :func:`settled_end`.

    It spans ``max(ceil(lookback_s * 1000 / nominal_ms), min_candles)`` slots,
    so a candle that closed less than ``grace_ms`` ago is never counted as a
    gap. Negative ``lookback_s``, ``min_candles`` or ``grace_ms`` raise
    ValueError.
    """
    if lookback_s < 0 or min_candles < 0:
        raise ValueError("lookback_s and min_candles must be >= 0")
    end = settled_end(tf, now_ms, grace_ms)
    n = max(-(-(lookback_s * 1000) // tf.nominal_ms), min_candles)
    return Window(start_ms=tf.shift(end, -n), end_ms=end)
