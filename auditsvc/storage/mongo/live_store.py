"""The live tail's database side: newest candles (polled or watched) and the
scores and gaps it stores.

Polling uses the ``(symbol, timestamp)`` index each candle collection has
(``setup-db`` creates it): one query per collection, whatever the number of
symbols sharing it, matching only candles newer than those already seen, so
its cost follows the insert rate, not the window length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from pymongo import UpdateOne

from auditsvc.domain.records import GapRecord, ScoreRecord
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import GAPS, SERIES, Database, to_dt, to_ms

_WATCHED = ("insert", "replace", "update")


class MongoCandleFeed:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._db = database.db

    async def newest(self, collection: str, symbol: str) -> int | None:
        doc = await self._db[collection].find_one(
            {"symbol": symbol}, {"_id": 0, "timestamp": 1}, sort=[("timestamp", -1)]
        )
        return None if doc is None or "timestamp" not in doc else to_ms(doc["timestamp"])

    async def poll(
        self, collection: str, floor_ms: int, recent: Sequence[str], lagging: dict[str, int | None]
    ) -> list[tuple[str, int]]:
        branches: list[dict[str, Any]] = []
        if recent:
            branches.append(
                {"symbol": {"$in": list(recent)}, "timestamp": {"$gt": to_dt(floor_ms)}}
            )
        for symbol, newest in lagging.items():
            clause: dict[str, Any] = {"symbol": symbol}
            if newest is not None:
                clause["timestamp"] = {"$gt": to_dt(newest)}
            branches.append(clause)
        if not branches:
            return []
        query = branches[0] if len(branches) == 1 else {"$or": branches}
        docs = await (
            self._db[collection]
            .find(query, {"_id": 0, "symbol": 1, "timestamp": 1})
            .sort("timestamp", 1)
            .to_list(None)
        )
        return [(d["symbol"], to_ms(d["timestamp"])) for d in docs if "timestamp" in d]

    async def change_streams_supported(self, collections: Sequence[str]) -> bool:
        hello = await self._database.client.admin.command("hello")
        if not (hello.get("setName") or hello.get("msg") == "isdbgrid"):
            return False
        cursor = await self._db.list_collections(filter={"name": {"$in": list(collections)}})
        # MongoDB time-series collections cannot be watched.
        return all(spec.get("type") != "timeseries" for spec in await cursor.to_list(None))

    async def watch(self, collections: Sequence[str]) -> AsyncIterator[tuple[str, str, int]]:
        pipeline = [
            {
                "$match": {
                    "operationType": {"$in": list(_WATCHED)},
                    "ns.coll": {"$in": list(collections)},
                }
            }
        ]
        async with await self._db.watch(pipeline, full_document="updateLookup") as stream:
            async for change in stream:
                doc = change.get("fullDocument") or {}
                if "symbol" in doc and "timestamp" in doc:
                    yield change["ns"]["coll"], doc["symbol"], to_ms(doc["timestamp"])


class MongoLiveStore:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    async def stored_score(
        self, symbol: str, timeframe: str, session: Any = None
    ) -> ScoreRecord | None:
        doc = await self._db[SERIES].find_one(
            {"_id": f"{symbol}|{timeframe}"}, {"report": 0}, session=session
        )
        return None if doc is None else codec.score_record(doc)

    async def save_live_score(self, record: ScoreRecord, epoch: int, session: Any = None) -> None:
        await self._db[SERIES].update_one(
            {"_id": f"{record.symbol}|{record.timeframe}"},
            {"$set": {**codec.score_doc(record), "epoch": epoch}},
            upsert=True,
            session=session,
        )

    async def stored_scores(
        self, keys: Sequence[tuple[str, str]], session: Any = None
    ) -> dict[tuple[str, str], ScoreRecord]:
        ids = [f"{sym}|{tf}" for sym, tf in keys]
        cursor = self._db[SERIES].find({"_id": {"$in": ids}}, {"report": 0}, session=session)
        found = {}
        for doc in await cursor.to_list(None):
            record = codec.score_record(doc)
            found[(record.symbol, record.timeframe)] = record
        return found

    async def save_live_scores(
        self, records: Sequence[ScoreRecord], epoch: int, session: Any = None
    ) -> None:
        if not records:
            return
        ops = [
            UpdateOne(
                {"_id": f"{r.symbol}|{r.timeframe}"},
                {"$set": {**codec.score_doc(r), "epoch": epoch}},
                upsert=True,
            )
            for r in records
        ]
        await self._db[SERIES].bulk_write(ops, ordered=False, session=session)

    async def save_live_gap(self, gap: GapRecord, epoch: int, session: Any = None) -> None:
        doc = codec.gap_doc(gap, "", epoch)
        moving = {k: doc.pop(k) for k in ("end_time", "missing_candles", "severity")}
        key = doc.pop("_id")
        # A cycle that already stored this gap keeps its flag, backfill and detection time.
        await self._db[GAPS].update_one(
            {"_id": key}, {"$set": moving, "$setOnInsert": doc}, upsert=True, session=session
        )
