"""The health stream opens its database watch before it reads the snapshot, so a score
stored in between is not missed (issue 11, smaller correctness items)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from auditsvc.domain.records import ScoreRecord
from auditsvc.domain.values import HealthScore
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import SERIES
from auditsvc.storage.mongo.state_store import MongoStateStore

TIMEOUT = 15.0
# How long the gated watch holds its opening back when nothing releases it sooner.
HOLD = 3.0


class LateScoreStore(MongoStateStore):
    """The real store, with a score written just after each snapshot read, and a watch
    that opens only after that write (or after HOLD, if no snapshot is read first)."""

    released: asyncio.Event

    async def scores(self) -> list[ScoreRecord]:
        snapshot = await super().scores()
        late = ScoreRecord("BTCUSDT", "1m", HealthScore(50, 50, 100, 100, 1, 0), 1, "late")
        await self._db[SERIES].replace_one(
            {"_id": "BTCUSDT|1m"}, codec.score_doc(late), upsert=True
        )
        self.released.set()
        return snapshot

    async def _watch_database(self, *args: Any) -> AsyncIterator[ScoreRecord]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), HOLD)
        async for record in super()._watch_database(*args):
            yield record


class TestSnapshotAfterOpen:
    """A score stored between snapshot and watch reaches the subscriber."""

    async def test_score_between_snapshot_and_watch_is_sent(
        self, make_settings: Callable[..., Settings], start_replica: Callable[..., Any]
    ) -> None:
        """The score written right after the snapshot read is streamed."""
        # No live tail: its scores would reach the stream first.
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        service = replica.app.service
        store = LateScoreStore(replica.app.database)
        store.released = asyncio.Event()
        service._state = store  # the service under test, over the gated store
        stream = service.health_scores([], [])
        try:
            first = await asyncio.wait_for(anext(stream), TIMEOUT)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        assert (first.symbol, first.cycle_id) == ("BTCUSDT", "late")
