"""The demo writer of `make run` against SecantusDB: it fills the missing slots of a
due backfill request, never duplicates a candle, and closes the request."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from auditsvc.devtools.demobackfill import DemoBackfiller
from auditsvc.ops.settings import Settings
from tests.support import SecantusDB

MIN = 60_000
T0 = 1_767_225_600_000
NOW_S = T0 / 1000 + 3600


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@pytest.fixture
def client(mongo: SecantusDB) -> Iterator[Any]:
    c: Any = MongoClient(mongo.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        yield c
    finally:
        c.close()


class TestDemoBackfiller:
    """What the demo writer does with the requests it finds."""

    def test_fills_due_request_once_and_closes_it(
        self, make_settings: Callable[..., Settings], client: Any
    ) -> None:
        """A due request's hole is written (held slots untouched), closed; a young one waits."""
        settings = make_settings(AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m")
        db = client[settings.mongo.database]
        coll = db["candles_BTCUSDT_1m"]
        coll.insert_many(
            [{"symbol": "BTCUSDT", "timestamp": at(T0 + i * MIN)} for i in (0, 1, 3, 6)]
        )
        due = at(round(NOW_S * 1000) - 60_000)
        young = at(round(NOW_S * 1000) - 1000)
        common = {"symbol": "BTCUSDT", "timeframe": "1m", "open": True, "status": "pending"}
        db["backfill_requests"].insert_many(
            [
                {
                    **common,
                    "_id": "bf-due",
                    "start_time": at(T0 + 2 * MIN),
                    "end_time": at(T0 + 6 * MIN),
                    "created_at": due,
                },
                {
                    **common,
                    "_id": "bf-young",
                    "start_time": at(T0 + 7 * MIN),
                    "end_time": at(T0 + 9 * MIN),
                    "created_at": young,
                },
            ]
        )
        writer = DemoBackfiller(settings.mongo, settings.audit, lambda: NOW_S, client)
        assert writer.tick() == 3  # slots 2, 4, 5: slot 3 was held
        opens = sorted(round(d["timestamp"].timestamp() * 1000) for d in coll.find({}))
        assert opens == [T0 + i * MIN for i in range(7)]
        closed = db["backfill_requests"].find_one({"_id": "bf-due"})
        assert (closed["open"], closed["status"]) == (False, "done")
        assert db["backfill_requests"].find_one({"_id": "bf-young"})["open"] is True
        assert writer.tick() == 0  # nothing due any more
