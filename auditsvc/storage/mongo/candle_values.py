"""Candle values as a cycle reads them for the content rules: a projection limited
to the fields the rules use, and a decoding that never raises.

Guarantees:

* The projection holds ``symbol``, ``timestamp``, ``open``, ``high``, ``low``,
  ``close`` and ``volume``, plus each optional field whose name is configured
  (CANDLE_CLOSE_TIME_FIELD, CANDLE_TRADES_FIELD, CANDLE_TAKER_BUY_VOLUME_FIELD,
  CANDLE_QUOTE_VOLUME_FIELD); an empty name turns its rule off.
* :func:`decode_candle` maps every value to what :class:`~auditsvc.domain.candle.Candle`
  holds: a number (int, float, ``Decimal128``, or a string holding a number) to
  a float; a missing field to None (the rules report a missing price or volume,
  and skip a missing optional field); anything else, unreadable, to
  ``float("nan")``, so the rules report it rather than the reader dropping the
  candle. A close time is a date or an integer of ms; a trade count an
  integral number; an unreadable one becomes -1, which its rule reports.

Limits: dotted names read sub-documents; arrays are not looked into.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson.decimal128 import Decimal128

from auditsvc.domain.candle import Candle
from auditsvc.storage.mongo.database import to_ms

_PRICES = ("open", "high", "low", "close", "volume")
_MISSING = object()
_NAN = float("nan")


@dataclass(frozen=True, slots=True)
class CandleFields:
    """Where the optional Binance fields live in a candle document (None: absent)."""

    close_time: str | None = None
    trades: str | None = None
    taker_buy_volume: str | None = None
    quote_volume: str | None = None

    def projection(self) -> dict[str, int]:
        names = ["symbol", "timestamp", *_PRICES]
        names += [
            n for n in (self.close_time, self.trades, self.taker_buy_volume, self.quote_volume) if n
        ]
        return {"_id": 0, **dict.fromkeys(names, 1)}


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def number(value: Any) -> float | None:
    """A stored value as a float: None when missing, NaN when unreadable."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return _NAN
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int beyond the largest float
            return math.inf if value > 0 else -math.inf
    if isinstance(value, Decimal128):
        try:
            return float(value.to_decimal())
        except (ArithmeticError, ValueError):
            return _NAN
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return _NAN
    return _NAN


def _count(value: Any) -> int | None:
    n = number(value)
    if n is None:
        return None
    return int(n) if math.isfinite(n) and n == int(n) else -1


def _close_ms(value: Any) -> int | None:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, dt.datetime):
        return to_ms(value)
    return _count(value)


def decode_candle(doc: Mapping[str, Any], open_ms: int, fields: CandleFields) -> Candle:
    """The candle a document holds (see the module docstring); never raises."""
    o, h, lo, c, v = (number(_get(doc, name)) for name in _PRICES)
    f = fields
    return Candle(
        open_time_ms=open_ms,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        close_time_ms=_close_ms(_get(doc, f.close_time)) if f.close_time else None,
        trade_count=_count(_get(doc, f.trades)) if f.trades else None,
        taker_buy_volume=number(_get(doc, f.taker_buy_volume)) if f.taker_buy_volume else None,
        quote_volume=number(_get(doc, f.quote_volume)) if f.quote_volume else None,
    )
