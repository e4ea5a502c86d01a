"""Concurrent and repeated mutating calls: nothing is lost and work runs once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect

END_MS = 1_767_225_600_000
SLOTS = 240
TIMEOUT = 30.0
WINDOW = {
    "start_time": Timestamp(seconds=(END_MS - SLOTS * 60_000) // 1000),
    "end_time": Timestamp(seconds=END_MS // 1000),
}


@pytest.fixture
async def database(make_settings: Any) -> AsyncIterator[Any]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


async def _seed(database: Any) -> list[dict[str, Any]]:
    docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
    await database.db["candles_BTCUSDT_1m"].insert_many(docs)
    return docs


class TestConcurrentRemovals:
    """Two removals of one series at once never delete every copy of a candle."""

    async def test_keep_newest_and_keep_oldest_together(
        self, make_settings, start_replica, database
    ):
        """Opposite strategies racing leave exactly one document in every slot."""
        docs = await _seed(database)
        replica = await start_replica(make_settings(ENABLE_DUPLICATE_REMOVAL="true"))
        calls = [
            replica.stub.ResolveDuplicates(
                pb.ResolveDuplicatesRequest(
                    symbol="BTCUSDT", timeframe="1m", strategy=strategy, request_id=rid, **WINDOW
                ),
                timeout=TIMEOUT,
            )
            for strategy, rid in ((pb.STRATEGY_KEEP_NEWEST, "n"), (pb.STRATEGY_KEEP_OLDEST, "o"))
        ]
        await asyncio.gather(*calls)
        left = await database.db["candles_BTCUSDT_1m"].find({}).to_list(None)
        per_slot = Counter(d["timestamp"] for d in left)
        assert set(per_slot.values()) == {1}
        assert len(per_slot) == len({d["timestamp"] for d in docs})
        archived = await database.db["duplicate_archive"].count_documents({})
        assert len(left) + archived == len(docs)


class TestRepeatedRequestId:
    """Concurrent repeats of one request_id do the work once."""

    async def test_concurrent_repeats_share_one_cycle(self, make_settings, start_replica, database):
        """Three simultaneous RunAudit calls with one request_id return one cycle."""
        await _seed(database)
        replica = await start_replica(make_settings())
        request = pb.RunAuditRequest(
            symbols=["BTCUSDT"], timeframes=["1m"], request_id="same", **WINDOW
        )
        replies = await asyncio.gather(
            *(replica.stub.RunAudit(request, timeout=TIMEOUT) for _ in range(3))
        )
        assert len({r.cycle.cycle_id for r in replies}) == 1
        assert await database.db["audit_cycles"].count_documents({}) == 1


class TestRestoreThenRerun:
    """A request re-run after its restore is archived afresh and restorable again."""

    async def test_second_restore_brings_documents_back(
        self, make_settings, start_replica, database
    ):
        """Remove, restore, remove again without a stored result: restore still works."""
        from auditsvc.storage.mongo import MongoDuplicateStore

        docs = await _seed(database)
        settings = make_settings(ENABLE_DUPLICATE_REMOVAL="true")
        replica = await start_replica(settings)
        store = MongoDuplicateStore(database, "test")
        for attempt in range(2):
            # A distinct request_id per attempt would be the normal case; the same
            # one (its stored result deleted) is what a crashed run replays.
            await database.db["audit_requests"].delete_many({})
            reply = await replica.stub.ResolveDuplicates(
                pb.ResolveDuplicatesRequest(
                    symbol="BTCUSDT", timeframe="1m", request_id="again", **WINDOW
                ),
                timeout=TIMEOUT,
            )
            assert reply.documents_removed == 3, attempt
            restored, _ = await store.restore("again")
            assert restored == 3, attempt
        count = await database.db["candles_BTCUSDT_1m"].count_documents({})
        assert count == len(docs)
