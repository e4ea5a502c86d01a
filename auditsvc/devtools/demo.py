"""Demo candles with known gaps and duplicates, for `make run` and the tests.

``demo_series`` is pure: given an end time it returns the documents and what an
audit must find in them, so tests can assert exact numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from auditsvc.domain.timeframes import parse_timeframe


@dataclass(frozen=True)
class Expected:
    gaps: tuple[tuple[int, int], ...]  # (start_ms, missing)
    duplicate_slots: tuple[int, ...]


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def candle_doc(symbol: str, t_ms: int, price: float, i: int = 0) -> dict[str, Any]:
    """One demo candle opening at ``t_ms``; ``i`` varies the prices and volume."""
    return {
        "symbol": symbol,
        "timestamp": _dt(t_ms),
        "open": price + i * 0.01,
        "high": price + i * 0.01 + 0.5,
        "low": price + i * 0.01 - 0.5,
        "close": price + i * 0.01 + 0.1,
        "volume": 10.0 + i % 7,
    }


def demo_series(
    symbol: str, timeframe: str, end_ms: int, slots: int, price: float = 100.0
) -> tuple[list[dict[str, Any]], Expected]:
    """``slots`` candles ending before the slot containing ``end_ms``, with two gaps
    (one of 3 slots, one of 90 slots or a quarter of the series) and 3 duplicates."""
    tf = parse_timeframe(timeframe)
    end = tf.floor(end_ms)
    start = tf.shift(end, -slots)
    opens = list(tf.iter_opens(start, end))
    short = (len(opens) // 4, 3)
    long_len = min(90, max(2, len(opens) // 4))
    long = (len(opens) // 2, long_len)
    missing = set(range(short[0], short[0] + short[1])) | set(range(long[0], long[0] + long[1]))
    dup_idx = (len(opens) // 8, len(opens) * 3 // 4, len(opens) - 2)
    docs: list[dict[str, Any]] = []
    for i, t in enumerate(opens):
        if i in missing:
            continue
        candle = candle_doc(symbol, t, price, i)
        docs.append(candle)
        if i in dup_idx:
            docs.append({**candle, "close": candle["close"] + 0.01})
    expected = Expected(
        gaps=((opens[short[0]], short[1]), (opens[long[0]], long[1])),
        duplicate_slots=tuple(opens[i] for i in dup_idx),
    )
    return docs, expected
