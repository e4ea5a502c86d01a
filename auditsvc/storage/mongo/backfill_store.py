"""Backfill requests: written by the leader, executed by the data writers.

A request stays open (``open: true``) until a data writer finishes it and sets
``open: false``; the partial unique index on ``gap_key`` then guarantees that a
gap never has two open requests, even if two cycles race.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.errors import DuplicateKeyError

from auditsvc.domain.records import BackfillRequest
from auditsvc.storage.mongo.database import BACKFILLS, Database, to_dt


def gap_key(symbol: str, timeframe: str, start_ms: int) -> str:
    # Keyed by where the gap starts: a gap that grows at its end is the same gap.
    return f"{symbol}|{timeframe}|{start_ms}"


class MongoBackfillStore:
    def __init__(self, database: Database) -> None:
        self._col = database.db[BACKFILLS]

    async def open_request_id(self, symbol: str, timeframe: str, start_ms: int) -> str | None:
        doc = await self._col.find_one(
            {"gap_key": gap_key(symbol, timeframe, start_ms), "open": True}, {"request_id": 1}
        )
        return None if doc is None else str(doc["request_id"])

    async def open_count(self) -> int:
        count: int = await self._col.count_documents({"open": True})
        return count

    async def create(self, req: BackfillRequest, session: Any = None) -> str:
        """Inserts the request; returns the open request's id if one already exists."""
        key = gap_key(req.symbol, req.timeframe, req.start_ms)
        existing = await self._col.find_one({"gap_key": key, "open": True}, session=session)
        if existing is not None:
            return str(existing["request_id"])
        doc = {
            "_id": req.request_id,
            "request_id": req.request_id,
            "gap_key": key,
            "symbol": req.symbol,
            "timeframe": req.timeframe,
            "start_time": to_dt(req.start_ms),
            "end_time": to_dt(req.end_ms),
            "priority": req.priority,
            "status": "pending",
            "open": True,
            "created_at": dt.datetime.now(dt.UTC),
            "epoch": req.epoch,
        }
        try:
            await self._col.insert_one(doc, session=session)
        except DuplicateKeyError:
            if session is not None:
                raise  # the transaction is aborted; with_transaction decides
            existing = await self._col.find_one({"gap_key": key, "open": True}, session=session)
            return str(existing["request_id"]) if existing else req.request_id
        return req.request_id
