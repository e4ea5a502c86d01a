"""The live tail's database side: newest candles (polled or watched), the
verdicts and gaps it stores, its heartbeat, and the reading of that heartbeat
every replica dates its verdicts by.

Polling reads each candle collection with one query, whatever the number of
symbols sharing it, matching only candles newer than those already seen, so
its cost follows the insert rate, not the window length. It uses the
``{timestamp: 1}`` index where the collection has one (``setup-db`` creates it
for shared collections), else the ``(symbol, timestamp)`` index.

With ``CandleFields`` (content checks on), a poll projects the fields the content
rules use and a change event's document is decoded the same way
(``candle_values.decode_candle``), so the tail judges each candle's values
without another read; without them, only times cross the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from auditsvc.domain.candle import Candle
from auditsvc.domain.gap_lifecycle import GapState, severity_rank
from auditsvc.domain.records import GapRecord, LiveVerdict, ScoreRecord
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.interfaces import Confirmation
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.candle_time import (
    CANDLE_CODEC,
    DATE_RANGE,
    MAX_DATE,
    MIN_DATE,
    IgnoredCandles,
)
from auditsvc.storage.mongo.candle_values import CandleFields, decode_candle
from auditsvc.storage.mongo.database import (
    COLLECTIONS,
    FENCES,
    GAPS,
    SERIES,
    VERDICTS,
    Database,
    TimeIndexes,
    to_dt,
    to_ms,
)
from auditsvc.storage.mongo.series_writes import series_id, verdict_writes

HEARTBEAT_ID = "live-tail"

_WATCHED = ("insert", "replace")
# Documents per reply of a poll: one round trip for a second of a thousand 1s
# series (the server's default first batch is 101 documents).
_POLL_BATCH = 10_000
# Series read by _id at most; more are read by timeframe in one pass.
_ID_LOOKUP_MAX = 200
# Per-symbol reads in flight at once (a new leader's first look, stalled symbols).
_CONCURRENCY = 16
# Names in one $in: symbols of a poll read by symbol, collections a stream
# matches. A server may compare each document with the whole list (SecantusDB
# scans the collection for a $in), so one query's work must not grow with the
# number of series; past this, more names save only round trips.
_IN_MAX = 64
_TIMES = {"_id": 0, "symbol": 1, "timestamp": 1}
# (symbol, open ms, the candle's values or None when the feed reads times only).
Seen = tuple[str, int, Candle | None]


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class MongoCandleFeed:
    """Candle timestamps are decoded safely (``candle_time``): one that is not a
    usable date is skipped and counted, never raised on, in every method.

    ``fields``: poll and watch also decode each candle's values (None: times only).
    """

    def __init__(
        self,
        database: Database,
        metrics: Metrics | None = None,
        fields: CandleFields | None = None,
    ) -> None:
        self._database = database
        self._db = database.db.with_options(codec_options=CANDLE_CODEC)
        self._time_index = TimeIndexes(database)
        self._ignored = IgnoredCandles(metrics)
        self._fields = fields
        self._projection = _TIMES if fields is None else fields.projection()

    def _values(self, doc: Any, t: int) -> Candle | None:
        return None if self._fields is None else decode_candle(doc, t, self._fields)

    async def newest(
        self,
        collection: str,
        symbols: Sequence[str],
        below_ms: int | None = None,
        since_ms: int | None = None,
    ) -> dict[str, int | None]:
        """The newest usable open time of each symbol (opening at or before
        ``below_ms`` when given), None for a symbol without one.

        ``since_ms``: most symbols are expected to have a candle after it (a new
        leader's snapshot of live series). Where several symbols share a collection
        with a ``{timestamp: 1}`` index, one time-range read after ``since_ms`` finds
        theirs, and only the symbols it does not find are read one by one, so the
        number of queries follows the stalled symbols, not all of them.

        One indexed find per symbol, _CONCURRENCY at a time: done one after another,
        the first values are stale by the time the last arrive (seconds, at a thousand
        symbols), and every symbol then looks behind the others. Measured against
        one query per batch of symbols (a ``$group`` of each symbol's first candle,
        or a read descending in time): on SecantusDB any ``$in`` scans the whole
        collection, so both were slower at 1,000 symbols (docs/PERFORMANCE.md).

        A value that is not a usable date sorts above every date when it is a BSON
        Timestamp or a date past year 9999, so it is what an unfiltered newest-first
        read returns: it is counted and the symbol read again over dates only.
        """
        found: dict[str, int | None] = {}
        if since_ms is not None and len(symbols) > 1 and await self._time_index.has(collection):
            wanted = set(symbols)
            recent: dict[str, Any] = {"$gt": to_dt(since_ms), "$lte": MAX_DATE}
            if below_ms is not None:
                recent["$lte"] = to_dt(below_ms)
            for sym, t, _ in await self._read(collection, {"timestamp": recent}, _TIMES):
                if sym in wanted:
                    found[sym] = t  # ascending: the last one read is the newest
            symbols = [s for s in symbols if s not in found]
        gate = asyncio.Semaphore(_CONCURRENCY)
        col = self._db[collection]
        only: dict[str, Any] = {"_id": 0, "timestamp": 1}

        first: dict[str, Any] = {}
        if below_ms is not None:
            first = {"timestamp": {"$gte": MIN_DATE, "$lte": to_dt(below_ms)}}

        async def one(symbol: str) -> int | None:
            async with gate:
                doc = await col.find_one(
                    {"symbol": symbol, **first}, only, sort=[("timestamp", -1)]
                )
                if doc is None:
                    return None
                t = self._ignored.time_ms(collection, symbol, doc.get("timestamp"))
                if t is not None:
                    return t
                dates = first.get("timestamp", DATE_RANGE)  # keeps below_ms when given
                doc = await col.find_one(
                    {"symbol": symbol, "timestamp": dates}, only, sort=[("timestamp", -1)]
                )
            return (
                None if doc is None else self._ignored.time_ms(collection, symbol, doc["timestamp"])
            )

        one_by_one = await asyncio.gather(*(one(s) for s in symbols))
        return {**found, **dict(zip(symbols, one_by_one, strict=True))}

    async def poll(
        self, collection: str, floor_ms: int, recent: Sequence[str], lagging: dict[str, int | None]
    ) -> list[Seen]:
        """(symbol, open time, values) of candles newer than those seen, ascending per symbol.

        ``recent`` symbols are those whose newest seen candle is at or after
        ``floor_ms``: one query per collection reads what arrived after the floor.
        With a ``{timestamp: 1}`` index (``setup-db`` makes one when symbols share
        a collection) that query is a range on time alone, filtered here; without
        it, a ``$in`` on the ``(symbol, timestamp)`` index. Each ``lagging`` symbol
        (stalled, or never seen) gets its own indexed query.
        """
        # Dates only, and only those Python holds: a candle past year 9999 stays out
        # of every poll instead of being read (and skipped) by each one.
        branches: list[dict[str, Any]] = []
        for symbol, newest in lagging.items():
            after = DATE_RANGE if newest is None else {"$gt": to_dt(newest), "$lte": MAX_DATE}
            branches.append({"symbol": symbol, "timestamp": after})
        after_floor = {"$gt": to_dt(floor_ms), "$lte": MAX_DATE}
        found: list[Seen] = []
        if len(recent) > 1 and await self._time_index.has(collection):
            wanted = set(recent)
            by_time = await self._read(collection, {"timestamp": after_floor}, self._projection)
            found = [seen for seen in by_time if seen[0] in wanted]
        else:
            for part in _chunks(recent, _IN_MAX):
                names: Any = part[0] if len(part) == 1 else {"$in": part}
                branches.append({"symbol": names, "timestamp": after_floor})
        # One query per branch, _CONCURRENCY at a time: each is one symbol, or one
        # bounded batch, on the (symbol, timestamp) index; an $or of them all would
        # be one query whose work grows with the number of symbols.
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(clause: dict[str, Any]) -> list[Seen]:
            async with gate:
                return await self._read(collection, clause, self._projection)

        for part_found in await asyncio.gather(*(one(c) for c in branches)):
            found += part_found
        return found

    async def _read(
        self, collection: str, query: dict[str, Any], projection: dict[str, int]
    ) -> list[Seen]:
        docs = await (
            self._db[collection]
            .find(query, projection)
            .sort("timestamp", 1)
            .batch_size(_POLL_BATCH)
            .to_list(None)
        )
        found = []
        for d in docs:
            t = self._ignored.time_ms(collection, d.get("symbol"), d.get("timestamp"))
            if t is not None:
                found.append((d["symbol"], t, None if projection is _TIMES else self._values(d, t)))
        return found

    async def change_streams_supported(self, collections: Sequence[str]) -> bool:
        hello = await self._database.client.admin.command("hello")
        if not (hello.get("setName") or hello.get("msg") == "isdbgrid"):
            return False
        for part in _chunks(collections, _IN_MAX):
            cursor = await self._db.list_collections(filter={"name": {"$in": part}})
            # MongoDB time-series collections cannot be watched.
            if any(spec.get("type") == "timeseries" for spec in await cursor.to_list(None)):
                return False
        return True

    async def watch(
        self, collections: Sequence[str], opened: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, str, int, Candle | None]]:
        """(collection, symbol, open time, values) of each candle inserted or replaced
        from the moment the stream is open; ``opened`` is set at that moment.

        Up to ``_IN_MAX`` collections are matched by name on the server; more (one
        collection per symbol) are matched here, the server dropping only the
        service's own collections, so the stream's filter stays bounded.
        """
        wanted = set(collections)
        names: dict[str, Any] = (
            {"$in": list(collections)}
            if len(collections) <= _IN_MAX
            else {"$nin": [*COLLECTIONS, FENCES]}
        )
        pipeline = [{"$match": {"operationType": {"$in": list(_WATCHED)}, "ns.coll": names}}]
        # No updateLookup: inserts and replaces carry their document, and a lookup
        # per event is a read per insert (SecantusDB scanned the collection for
        # each: a 10,000-document restore starved the leader's lease renewals).
        # An update of an existing candle cannot make a newer one; an upsert that
        # creates one is an insert event.
        async with await self._db.watch(pipeline) as stream:
            if opened is not None:
                opened.set()
            async for change in stream:
                coll = change["ns"]["coll"]
                doc = change.get("fullDocument") or {}
                if coll not in wanted or "symbol" not in doc:
                    continue
                t = self._ignored.time_ms(coll, doc["symbol"], doc.get("timestamp"))
                if t is not None:
                    yield coll, doc["symbol"], t, self._values(doc, t)


class MongoLiveStore:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    async def stored_scores(
        self, keys: Sequence[tuple[str, str]], session: Any = None
    ) -> dict[tuple[str, str], ScoreRecord]:
        wanted = set(keys)
        query: dict[str, Any]
        if len(wanted) > _ID_LOOKUP_MAX:
            # Many series (a new leader's snapshot): one pass over their timeframes'
            # documents. A $in of thousands of ids is a scan per chunk on some servers
            # (30,000 series in chunks of 50 took 15 s on SecantusDB).
            query = {"timeframe": {"$in": sorted({tf for _, tf in wanted})}}
        else:
            query = {"_id": {"$in": [series_id(sym, tf) for sym, tf in wanted]}}
        cursor = self._db[SERIES].find(query, {"report": 0, "settled": 0}, session=session)
        found = {}
        for doc in await cursor.to_list(None):
            if (doc.get("symbol"), doc.get("timeframe")) in wanted:
                record = codec.score_record(doc)
                found[(record.symbol, record.timeframe)] = record
        return found

    async def save_verdicts(
        self, verdicts: Sequence[LiveVerdict], epoch: int, session: Any = None
    ) -> None:
        if not verdicts:
            return
        ops = [op for v in verdicts for op in verdict_writes(v, epoch)]
        await self._db[SERIES].bulk_write(ops, ordered=False, session=session)

    async def confirm(self, epoch: int, confirmed_ms: int, mode: str, session: Any = None) -> None:
        # Dated by the judgement, never by the write: a batch that commits seconds
        # after its pass vouches only for the instant the pass judged. The cap at
        # the database's now (a leader whose clock runs ahead must not date a
        # verdict in the database's future) is applied by the reader, as
        # min(confirmed_at, written_at): comparing $$NOW inside the update is not
        # portable (SecantusDB 2026-12 answers $$NOW to {$min: ["$$NOW", t]} and
        # false to {$lt: ["$$NOW", t]} whatever t is, which dated every
        # confirmation at its commit: figure 13's wrong LIVE).
        await self._db[VERDICTS].update_one(
            {"_id": HEARTBEAT_ID},
            [
                {
                    "$set": {
                        "epoch": epoch,
                        "mode": mode,
                        "confirmed_at": {"$literal": to_dt(confirmed_ms)},
                        "written_at": "$$NOW",
                    }
                }
            ],
            upsert=True,
            session=session,
        )

    async def save_live_gap(self, gap: GapRecord, epoch: int, session: Any = None) -> None:
        doc = codec.gap_doc(gap, "", epoch)
        moving = {k: doc.pop(k) for k in ("end_time", "missing_candles", "severity")}
        moving["severity_rank"] = severity_rank(gap.severity)
        moving["length_ms"] = gap.end_ms - gap.start_ms
        # A new gap is OPEN; a stored one keeps the lifecycle the healing pass gave it.
        doc["state"] = GapState.OPEN.value
        doc["attempts"] = 0
        # With the epoch, on insert only: when this epoch wrote it.
        doc["written_at"] = to_dt(gap.detected_ms)
        key = doc.pop("_id")
        # The tail saw these slots missing as the next candle arrived: the gap was
        # detected live even when a cycle stored it first (during the outage). A
        # cycle's record keeps its backfill and detection time.
        moving["detected_live"] = doc.pop("detected_live")
        await self._db[GAPS].update_one(
            {"_id": key}, {"$set": moving, "$setOnInsert": doc}, upsert=True, session=session
        )


class MongoVerdictSource:
    """Reads the live tail's heartbeat with the database's now: one query, or a
    ``hello`` (whose ``localTime`` is the server's clock) while there is none."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._db = database.db

    async def confirmation(self) -> tuple[Confirmation | None, int]:
        cursor = await self._db[VERDICTS].aggregate(
            [
                {"$match": {"_id": HEARTBEAT_ID}},
                {
                    "$project": {
                        "epoch": 1,
                        "mode": 1,
                        "confirmed_at": 1,
                        "written_at": 1,
                        "now": "$$NOW",
                    }
                },
            ]
        )
        docs = await cursor.to_list(1)
        if not docs:
            hello = await self._database.client.admin.command("hello")
            return None, to_ms(hello["localTime"])
        d = docs[0]
        epoch, mode = int(d.get("epoch", 0)), str(d.get("mode", ""))
        judged = to_ms(d["confirmed_at"])
        if not d.get("written_at"):
            return Confirmation(epoch, judged, mode, 0), to_ms(d["now"])
        written = to_ms(d["written_at"])
        # Capped at the database's clock when it was written (see confirm).
        return Confirmation(epoch, min(judged, written), mode, written), to_ms(d["now"])
