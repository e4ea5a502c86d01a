"""Reading candles: sorted timestamps for the audit, duplicate groups for removal.

Only timestamps cross the wire for an audit (a projected, sorted scan that a
``(symbol, timestamp)`` index covers), in batches, so memory stays flat
whatever the window's length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from auditsvc.domain.values import CandleRef, Window
from auditsvc.storage.mongo.database import Database, to_dt, to_ms

BATCH = 20_000


def _window_filter(symbol: str, window: Window) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timestamp": {"$gte": to_dt(window.start_ms), "$lt": to_dt(window.end_ms)},
    }


class MongoCandleStore:
    def __init__(self, database: Database, template: str) -> None:
        self._db = database.db
        self._template = template

    def collection(self, symbol: str, timeframe: str) -> str:
        return self._template.format(symbol=symbol, timeframe=timeframe)

    async def timestamps(
        self, symbol: str, timeframe: str, window: Window
    ) -> AsyncIterator[list[int]]:
        col = self._db[self.collection(symbol, timeframe)]
        cursor = (
            col.find(_window_filter(symbol, window), {"_id": 0, "timestamp": 1})
            .sort("timestamp", 1)
            .batch_size(BATCH)
        )
        while True:
            docs = await cursor.to_list(BATCH)
            if not docs:
                return
            yield [to_ms(d["timestamp"]) for d in docs if "timestamp" in d]

    async def duplicate_groups(
        self, symbol: str, timeframe: str, window: Window, version_field: str | None
    ) -> AsyncIterator[list[CandleRef]]:
        """Groups of documents sharing a timestamp, oldest timestamp first."""
        col = self._db[self.collection(symbol, timeframe)]
        member: dict[str, Any] = {"id": "$_id"}
        if version_field:
            member["v"] = f"${version_field}"
        pipeline = [
            {"$match": _window_filter(symbol, window)},
            {"$group": {"_id": "$timestamp", "n": {"$sum": 1}, "docs": {"$push": member}}},
            {"$match": {"n": {"$gt": 1}}},
            {"$sort": {"_id": 1}},
        ]
        async for group in await col.aggregate(pipeline, allowDiskUse=True):
            ts = to_ms(group["_id"])
            yield [
                CandleRef(doc_id=d["id"], timestamp_ms=ts, version=d.get("v"))
                for d in group["docs"]
            ]
