"""Candle open times as every candle read decodes them: safely, never raising.

A candle's ``timestamp`` is written by data writers this service does not own,
so any BSON value may sit there. Candle reads decode with :data:`CANDLE_CODEC`
(``DATETIME_AUTO``): a date Python's ``datetime`` can hold arrives as a
datetime, any other date (past year 9999, before year 1; MongoDB stores them)
as a ``DatetimeMS``, so the driver's decoder never raises on a candle.
:func:`candle_time_ms` then turns one value into milliseconds since the epoch,
or ``None`` for a candle that no read may use; :func:`ignored_reason` says why:

* ``out_of_range``: a BSON date Python's datetime cannot hold;
* ``wrong_type``: any other BSON type (a string, a number, a BSON Timestamp...);
* ``missing``: no ``timestamp`` field, or null.

:class:`IgnoredCandles` counts each candle a read skips in
``auditsvc_candles_ignored_total{reason}`` and logs once per series and reason
(per process), not once per candle.

Limits: a count is per read that meets the candle, not per distinct candle; a
hostile candle that every cycle reads is counted by every cycle, so a steady
rate says it is still there. Range queries on dates (:data:`DATE_RANGE`, and
every window read) match only BSON dates: MongoDB and SecantusDB compare
values of one type only, so those reads never meet the other types at all.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS

from auditsvc.ops.metrics import Metrics
from auditsvc.storage.mongo.database import to_ms

log = logging.getLogger(__name__)

OUT_OF_RANGE = "out_of_range"
WRONG_TYPE = "wrong_type"
MISSING = "missing"

CANDLE_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, tzinfo=dt.UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)

# Every date Python's datetime holds and no value of another BSON type: a query
# clause for reads (the newest candle) that would otherwise meet them first.
MIN_DATE = dt.datetime.min.replace(tzinfo=dt.UTC)
MAX_DATE = dt.datetime.max.replace(tzinfo=dt.UTC)
DATE_RANGE = {"$gte": MIN_DATE, "$lte": MAX_DATE}


def candle_time_ms(value: object) -> int | None:
    """The open time in ms of a decoded ``timestamp`` value, or None if unusable."""
    if isinstance(value, dt.datetime):
        return to_ms(value)
    return None


def ignored_reason(value: object) -> str:
    """Why :func:`candle_time_ms` returned None for ``value``."""
    if value is None:
        return MISSING
    if isinstance(value, DatetimeMS):
        return OUT_OF_RANGE
    return WRONG_TYPE


class IgnoredCandles:
    """Counts and logs the candles reads skip; one per store, metrics injected."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._counter = (metrics or Metrics()).candles_ignored
        # (collection, symbol, reason) already logged: at most series x 3 entries.
        self._logged: set[tuple[str, str, str]] = set()

    def time_ms(self, collection: str, symbol: object, value: object, count: int = 1) -> int | None:
        """``candle_time_ms(value)``; a None is counted ``count`` times and logged
        the first time for this series and reason."""
        t = candle_time_ms(value)
        if t is None:
            self.skip(collection, symbol, ignored_reason(value), value, count)
        return t

    def skip(
        self, collection: str, symbol: object, reason: str, value: object = None, count: int = 1
    ) -> None:
        self._counter.labels(reason=reason).inc(count)
        key = (collection, str(symbol), reason)
        if key in self._logged:
            return
        self._logged.add(key)
        log.warning(
            "candle ignored: its timestamp is not a usable date",
            extra={
                "collection": collection,
                "symbol": str(symbol)[:64],
                "reason": reason,
                "value": repr(value)[:80],
            },
        )
