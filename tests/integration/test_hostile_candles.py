"""Candles whose timestamp is not a usable date (a BSON Timestamp, a string, none)
never raise in the live tail's feed (newest, poll, watch) or in a cycle's candle
reads, on a real SecantusDB: they are skipped and counted by reason."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from bson import Timestamp
from prometheus_client import CollectorRegistry

from auditsvc.domain.values import Window
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.mongo.candle_store import MongoCandleStore
from auditsvc.storage.mongo.database import Database, connect, ensure_candle_index
from auditsvc.storage.mongo.live_store import MongoCandleFeed

TIMEOUT = 20.0
MIN = 60_000
COLL = "klines_1m"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
# A closed hour of 1m candles; the hostile ones sit inside it, where reads look.
END = 1_772_463_600_000  # 2026-03-02T15:00Z
START = END - 60 * MIN
PRICE = {"BTCUSDT": 84_200.0, "ETHUSDT": 2_210.0}


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def kline(symbol: str, timestamp: Any) -> dict[str, Any]:
    """A 1m kline shaped like the demo feed's; ``timestamp`` as given."""
    p = PRICE[symbol]
    doc = {"symbol": symbol, "open": p, "high": p * 1.001, "low": p * 0.999, "close": p}
    doc["volume"] = 12.5
    if timestamp is not None:
        doc["timestamp"] = timestamp
    return doc


# What a misbehaving writer leaves inside the hour: a BSON Timestamp (sorts above
# every date), an ISO string, epoch milliseconds, and no timestamp at all.
HOSTILE = [
    Timestamp((START + 30 * MIN) // 1000, 1),
    "2026-03-02T14:31:00Z",
    START + 32 * MIN,
    None,
]


def ignored(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("auditsvc_candles_ignored_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
async def database(make_settings: Any) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    col = handle.db[COLL]
    await ensure_candle_index(handle, COLL)
    await col.insert_many(
        [kline(s, at(t)) for s in SYMBOLS for t in range(START, END, MIN)], ordered=False
    )
    await col.insert_many([kline("BTCUSDT", ts) for ts in HOSTILE])
    yield handle
    await handle.close()


class TestFeed:
    """The tail's reads skip and count hostile candles."""

    async def test_newest_skips_a_timestamp_sorted_first(self, database: Database) -> None:
        """newest() returns the newest real date though a BSON Timestamp sorts above it."""
        metrics = Metrics(CollectorRegistry())
        feed = MongoCandleFeed(database, metrics)
        newest = await asyncio.wait_for(feed.newest(COLL, [*SYMBOLS, "SOLUSDT"]), TIMEOUT)
        assert newest == {"BTCUSDT": END - MIN, "ETHUSDT": END - MIN, "SOLUSDT": None}
        assert ignored(metrics, "wrong_type") == 1

    async def test_poll_reads_only_real_dates(self, database: Database) -> None:
        """A poll from before the hour, by symbol and as a never-seen symbol, reads
        every real candle and nothing else."""
        feed = MongoCandleFeed(database, Metrics(CollectorRegistry()))
        found = await asyncio.wait_for(
            feed.poll(COLL, START - MIN, ["ETHUSDT"], {"BTCUSDT": None}), TIMEOUT
        )
        for symbol in SYMBOLS:
            assert [t for s, t, _ in found if s == symbol] == list(range(START, END, MIN))

    async def test_watch_skips_and_counts(self, database: Database) -> None:
        """The change stream meets a Timestamp, a string and a missing timestamp, counts
        them, and goes on to yield the next real candle (it used to raise)."""
        metrics = Metrics(CollectorRegistry())
        feed = MongoCandleFeed(database, metrics)
        assert await feed.change_streams_supported([COLL])
        seen: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()

        async def follow() -> None:
            # Ends the stream itself after the last expected candle: closed between
            # events, not cancelled inside a read.
            async with aclosing(feed.watch([COLL])) as stream:
                async for item in stream:
                    await seen.put(item)
                    if item[1:3] == ("BTCUSDT", END):
                        return

        task = asyncio.create_task(follow())
        try:
            probe = END
            # The stream opens asynchronously: insert real candles until one shows up.
            while True:
                await database.db[COLL].insert_one(kline("ETHUSDT", at(probe)))
                try:
                    await asyncio.wait_for(seen.get(), 0.5)
                    break
                except TimeoutError:
                    assert not task.done(), task
                    probe += MIN
                    assert probe < END + 40 * MIN, "the change stream never opened"
            await database.db[COLL].insert_many([kline("BTCUSDT", ts) for ts in HOSTILE])
            await database.db[COLL].insert_one(kline("BTCUSDT", at(END)))
            item = await asyncio.wait_for(seen.get(), TIMEOUT)
            assert item == (COLL, "BTCUSDT", END, None)
            await asyncio.wait_for(task, TIMEOUT)
            assert seen.empty()
            assert ignored(metrics, "wrong_type") == 3
            assert ignored(metrics, "missing") == 1
        finally:
            if not task.done():  # a failed assertion above: do not leave it running
                task.cancel()


class TestCycleReads:
    """A cycle's candle reads never raise on hostile candles and keep the real ones."""

    async def test_reads_by_symbol_by_batch_and_duplicates(self, database: Database) -> None:
        """timestamps(), read_many() and duplicate_groups() return the hour's 60 real
        candles per symbol, and no duplicate group."""
        store = MongoCandleStore(database, "klines_{timeframe}", Metrics(CollectorRegistry()))
        hour = Window(START, END)
        single = [t async for batch in store.timestamps("BTCUSDT", "1m", hour) for t in batch]
        assert single == list(range(START, END, MIN))
        many: dict[str, list[int]] = {}
        async for symbol, stamps in store.read_many(COLL, {s: [hour] for s in SYMBOLS}, MIN):
            many.setdefault(symbol, []).extend(stamps)
        assert many == {s: list(range(START, END, MIN)) for s in SYMBOLS}
        groups = [g async for g in store.duplicate_groups("BTCUSDT", "1m", hour, None)]
        assert groups == []
