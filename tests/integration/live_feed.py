"""A live 1s candle feed for live-tail tests: the test decides which symbols are fed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from auditsvc.devtools.live_candles import live_candle

SEC = 1000


def candle(symbol: str, t_ms: int) -> dict[str, Any]:
    """A market-like 1s candle (identical ones would be a frozen feed)."""
    return live_candle(symbol, t_ms, SEC)


class Feeder:
    """Inserts the forming 1s candle of each fed symbol, as a live exchange feed would."""

    def __init__(self, coll: Any) -> None:
        self.coll = coll
        self.symbols: set[str] = set()
        self.newest: dict[str, int] = {}

    async def backfill(self, symbol: str, seconds: int) -> None:
        now = int(time.time()) * SEC
        docs = [candle(symbol, now - i * SEC) for i in range(seconds, -1, -1)]
        await self.coll.insert_many(docs)
        self.newest[symbol] = now

    async def run(self) -> None:
        while True:
            now = int(time.time()) * SEC
            for sym in list(self.symbols):
                last = self.newest.get(sym, now - SEC)
                docs = [candle(sym, t) for t in range(last + SEC, now + 1, SEC)]
                if docs:
                    await self.coll.insert_many(docs)
                    self.newest[sym] = now
            await asyncio.sleep(0.1)


@pytest.fixture
async def feeder(mongo: Any, db_name: str) -> AsyncIterator[Feeder]:
    client: Any = AsyncMongoClient(mongo.uri, tz_aware=True)
    f = Feeder(client[db_name]["klines_1s"])
    await f.coll.create_index([("symbol", 1), ("timestamp", 1)])
    task = asyncio.create_task(f.run())
    try:
        yield f
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def live_settings(make_settings: Any, mode: str) -> Any:
    return make_settings(
        AUDIT_SYMBOLS="BTCUSDT,ETHUSDT",
        AUDIT_TIMEFRAMES="1s",
        CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}",
        AUDIT_INGEST_GRACE="2",
        AUDIT_MIN_CANDLES="120",
        AUDIT_LOOKBACK="1",
        LIVE_MODE=mode,
        LIVE_POLL_INTERVAL="0.2",
    )
