"""Seeding candles: auditsvc.devtools.demo-shaped series (two gaps, three duplicated slots),
written with insert_many in chunks, then the (symbol, timestamp) index."""

from __future__ import annotations

import time
from typing import Any

from pymongo import ASCENDING

from auditsvc.devtools.demo import demo_series
from auditsvc.domain.timeframes import parse_timeframe

CHUNK = 10_000
DAY_MS = 86_400_000
# A fixed, day-aligned end (2026-01-01T00:00Z) for explicit-window figures.
FIXED_END_MS = 1_767_225_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def slots_for(timeframe: str, days: float) -> int:
    return max(4, round(days * DAY_MS / parse_timeframe(timeframe).nominal_ms))


async def insert(db: Any, collection: str, docs: list[dict[str, Any]]) -> None:
    col = db[collection]
    for i in range(0, len(docs), CHUNK):
        await col.insert_many(docs[i : i + CHUNK], ordered=False)


async def index(db: Any, collection: str) -> None:
    await db[collection].create_index(
        [("symbol", ASCENDING), ("timestamp", ASCENDING)], name="symbol_timestamp"
    )


async def seed_series(
    db: Any, collection: str, symbol: str, timeframe: str, end_ms: int, slots: int
) -> int:
    """One demo series in ``collection``; returns the number of documents written."""
    docs, _ = demo_series(symbol, timeframe, end_ms, slots)
    await insert(db, collection, docs)
    return len(docs)


async def seed_many(
    db: Any, collection: str, symbols: list[str], timeframe: str, end_ms: int, slots: int
) -> int:
    """Many symbols in one collection (buffered into big insert_many chunks)."""
    total = 0
    buffer: list[dict[str, Any]] = []
    for symbol in symbols:
        docs, _ = demo_series(symbol, timeframe, end_ms, slots)
        buffer.extend(docs)
        if len(buffer) >= CHUNK:
            await insert(db, collection, buffer)
            total += len(buffer)
            buffer = []
    if buffer:
        await insert(db, collection, buffer)
        total += len(buffer)
    await index(db, collection)
    return total


def window(end_ms: int, timeframe: str, slots: int) -> tuple[int, int]:
    """The [start, end) covering ``slots`` slots that end at the slot holding end_ms."""
    tf = parse_timeframe(timeframe)
    end = tf.floor(end_ms)
    return tf.shift(end, -slots), end
