"""Acknowledged outages (``gap_acknowledgements``): one document per
acknowledgement, keyed by its id, read whole by every cycle.

Limits: ``all`` reads at most ``limit`` documents (the use case refuses a new
acknowledgement beyond MAX_ACKS), in id order; writes take the caller's session,
the fenced transaction of the leader.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from auditsvc.domain.acknowledgement import Acknowledgement
from auditsvc.storage.mongo.database import ACKS, Database, to_dt, to_ms


class MongoAckStore:
    def __init__(self, database: Database) -> None:
        self._col = database.db[ACKS]

    async def all(self, limit: int) -> list[Acknowledgement]:
        docs = await self._col.find({}).sort("_id", 1).limit(limit).to_list(limit)
        return [_record(d) for d in docs]

    async def count(self) -> int:
        n: int = await self._col.count_documents({})
        return n

    async def page(self, after: str | None, limit: int) -> list[Acknowledgement]:
        query = {} if after is None else {"_id": {"$gt": after}}
        docs = await self._col.find(query).sort("_id", 1).limit(limit).to_list(limit)
        return [_record(d) for d in docs]

    async def get(self, ack_id: str) -> Acknowledgement | None:
        doc = await self._col.find_one({"_id": ack_id})
        return None if doc is None else _record(doc)

    async def insert(self, ack: Acknowledgement, epoch: int, session: Any = None) -> None:
        await self._col.insert_one(
            {
                "_id": ack.ack_id,
                "symbols": list(ack.symbols),
                "timeframes": list(ack.timeframes),
                "start_time": to_dt(ack.start_ms),
                "end_time": to_dt(ack.end_ms),
                "reason": ack.reason,
                "created_at": to_dt(ack.created_ms) if ack.created_ms else dt.datetime.now(dt.UTC),
                "epoch": epoch,
            },
            session=session,
        )

    async def delete(self, ack_id: str, session: Any = None) -> bool:
        result = await self._col.delete_one({"_id": ack_id}, session=session)
        return bool(result.deleted_count)


def _record(d: dict[str, Any]) -> Acknowledgement:
    return Acknowledgement(
        ack_id=str(d["_id"]),
        symbols=tuple(d.get("symbols", ())),
        timeframes=tuple(d.get("timeframes", ())),
        start_ms=to_ms(d["start_time"]),
        end_ms=to_ms(d["end_time"]),
        reason=str(d.get("reason", "")),
        created_ms=to_ms(d["created_at"]),
    )
