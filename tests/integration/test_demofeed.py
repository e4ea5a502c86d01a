"""The demo feed against SecantusDB with an injected clock: one candle per closed
slot, nothing for a paused symbol, and only the newest slot when it resumes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from auditsvc.devtools.demofeed import DemoFeed, set_paused
from auditsvc.ops.settings import Settings
from tests.support import SecantusDB

SEC = 1000
T0 = 1_767_225_600_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0 + 500

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def client(mongo: SecantusDB) -> Iterator[Any]:
    c: Any = MongoClient(mongo.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        yield c
    finally:
        c.close()


def opens(coll: Any, symbol: str) -> list[int]:
    docs = coll.find({"symbol": symbol}).sort("timestamp", 1)
    return [round(d["timestamp"].timestamp() * 1000) for d in docs]


class TestDemoFeed:
    """What the feed writes, tick by tick."""

    def test_feeds_pauses_and_resumes_with_a_gap(
        self, make_settings: Callable[..., Settings], client: Any, tmp_path: Path
    ) -> None:
        """Each closed 1s slot once; a paused symbol gets nothing; resumed, only its newest."""
        settings = make_settings(
            AUDIT_SYMBOLS="BTCUSDT,ETHUSDT",
            AUDIT_TIMEFRAMES="1s",
            CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}",
        )
        coll = client[settings.mongo.database]["klines_1s"]
        coll.insert_one({"symbol": "BTCUSDT", "timestamp": _dt(T0 - 3 * SEC)})
        clock = Clock()
        feed = DemoFeed(settings.mongo, settings.audit, tmp_path, clock=clock, client=client)

        assert feed.tick() == 3  # BTC catches up 2 slots after its seed; ETH starts at T0-1s
        assert opens(coll, "BTCUSDT") == [T0 - 3 * SEC, T0 - 2 * SEC, T0 - SEC]
        assert opens(coll, "ETHUSDT") == [T0 - SEC]
        assert feed.tick() == 0  # the slot at T0 is still forming

        set_paused(tmp_path, "ETHUSDT", pause=True)
        clock.ms += 3 * SEC
        assert feed.tick() == 3
        assert opens(coll, "ETHUSDT") == [T0 - SEC]

        set_paused(tmp_path, "ETHUSDT", pause=False)
        clock.ms += SEC
        assert feed.tick() == 2
        # The three slots ETH missed stay missing: the live tail sees a gap.
        assert opens(coll, "ETHUSDT") == [T0 - SEC, T0 + 3 * SEC]
        assert opens(coll, "BTCUSDT")[-1] == T0 + 3 * SEC
        clock.ms += SEC
        assert feed.tick() == 2
        assert opens(coll, "ETHUSDT")[-1] == T0 + 4 * SEC
        feed.stop()
        feed.stop()  # idempotent


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
