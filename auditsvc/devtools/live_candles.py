"""Stateless, market-like candles for live feeds (the demo feed, the bench's
feeds, the live tests): any writer can make slot ``t`` of a symbol on its own,
in any order, and every writer makes the same candle.

Guarantees: a candle's prices are valid and ordered (low <= open, close <= high),
consecutive candles differ (so the content rules never see a frozen feed) and
move by well under a percent (never a spike), the volume varies and is positive,
and the same (symbol, open time, price) always gives the same document.

Limits: the moves are small and bounded: this is a healthy liquid feed, not a
model of market returns (auditsvc.devtools.market_data generates those, with
heavy tails and quiet stretches, for detection-quality work).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

_HOUR_MS = 3_600_000


def _uniform(symbol: str, t_ms: int, salt: str) -> float:
    """A deterministic number in [0, 1) for (symbol, t, salt)."""
    digest = hashlib.blake2b(f"{symbol}|{t_ms}|{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _mid(symbol: str, t_ms: int, price: float) -> float:
    # Two slow waves with a per-symbol phase: a drifting price, the same for any
    # writer and any slot order.
    phase = _uniform(symbol, 0, "phase") * 2 * math.pi
    wave = 0.004 * math.sin(2 * math.pi * t_ms / (6 * _HOUR_MS) + phase)
    wave += 0.001 * math.sin(2 * math.pi * t_ms / 97_000 + phase)
    return price * math.exp(wave)


def live_candle(
    symbol: str, t_ms: int, slot_ms: int = 1000, price: float = 100.0
) -> dict[str, Any]:
    """The candle of ``symbol`` opening at ``t_ms`` (ms) in slots of ``slot_ms``."""
    open_ = _mid(symbol, t_ms, price) * (1 + 0.0004 * (_uniform(symbol, t_ms, "o") - 0.5))
    close = _mid(symbol, t_ms + slot_ms, price) * (1 + 0.0004 * (_uniform(symbol, t_ms, "c") - 0.5))
    high = max(open_, close) * (1 + 0.0003 * _uniform(symbol, t_ms, "h"))
    low = min(open_, close) * (1 - 0.0003 * _uniform(symbol, t_ms, "l"))
    return {
        "symbol": symbol,
        "timestamp": dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC),
        "open": round(open_, 6),
        "high": round(high, 6),
        "low": round(low, 6),
        "close": round(close, 6),
        "volume": round(1.0 + 20.0 * _uniform(symbol, t_ms, "v"), 4),
    }
