"""One candle's values as the content rules read them, and the checks on single numbers.

Guarantees:

* :class:`Candle` is frozen and holds only what the rules use: the open time (int
  ms) and the OHLCV values, plus the optional Binance fields ``close_time_ms``,
  ``trade_count``, ``taker_buy_volume`` and ``quote_volume``. ``None`` means the
  document does not carry the field; for the five required values it is a fault
  the rules report, for the optional ones it turns their rule off.
* :func:`is_price` and :func:`is_volume` never raise, whatever they are given:
  ``bool``, ``str`` and other non-numbers are simply not valid values.

Limits: decoding documents (field names, ``Decimal128``, strings) is the storage
layer's job; it should map a value it cannot read to ``float("nan")`` so that the
rules report it rather than the reader dropping the candle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candle:
    """One stored candle; times are ms since the Unix epoch, UTC."""

    open_time_ms: int
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    close_time_ms: int | None = None
    trade_count: int | None = None
    taker_buy_volume: float | None = None
    quote_volume: float | None = None

    @property
    def ohlc(self) -> tuple[float | None, float | None, float | None, float | None]:
        return (self.open, self.high, self.low, self.close)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool (a bool is an int to Python, never a price)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_price(value: object) -> bool:
    """A finite number > 0."""
    return is_number(value) and value > 0  # type: ignore[operator]


def is_volume(value: object) -> bool:
    """A finite number >= 0."""
    return is_number(value) and value >= 0  # type: ignore[operator]


def has_valid_prices(candle: Candle) -> bool:
    """Every one of open, high, low and close is a valid price."""
    return all(is_price(v) for v in candle.ohlc)
