"""Stored audit results that every replica reads: series reports, gaps,
cycles, health scores and idempotent request results.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from auditsvc.domain.errors import Unavailable
from auditsvc.domain.gap_lifecycle import DEFAULT_LISTED, GapState
from auditsvc.domain.records import (
    SCHEDULED,
    Cycle,
    GapQuery,
    GapRecord,
    ScoreQuery,
    ScoreRecord,
    SeriesReport,
)
from auditsvc.domain.series_state import SeriesState
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo import gap_writes
from auditsvc.storage.mongo.database import (
    CYCLE_REPORTS,
    CYCLES,
    GAPS,
    REQUESTS,
    SERIES,
    Database,
    to_dt,
    to_ms,
)
from auditsvc.storage.mongo.gap_writes import DEFAULT_RETENTION_S
from auditsvc.storage.mongo.series_writes import cycle_writes

log = logging.getLogger(__name__)

# Scores a health-stream subscriber may fall behind by before it is cut off.
_SUBSCRIBER_BACKLOG = 10_000


class MongoStateStore:
    def __init__(
        self,
        database: Database,
        poll_interval: float = 0.25,
        gap_retention_s: int = DEFAULT_RETENTION_S,
    ) -> None:
        self._database = database
        # GAP_HISTORY_RETENTION: how long filled and unfillable gaps stay listed.
        self._retention_s = gap_retention_s
        self._db = database.db
        self._poll_interval = poll_interval
        # One change stream per process, fanned out to every watch_scores() caller.
        self._watchers: set[asyncio.Queue[ScoreRecord | BaseException]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[None] | None = None

    async def ping(self) -> None:
        await self._database.client.admin.command("ping")

    async def save_series(
        self,
        report: SeriesReport,
        gaps: Sequence[GapRecord],
        *,
        cycle_id: str,
        epoch: int,
        live: bool = False,
        session: Any = None,
    ) -> None:
        """Stores a series' audit: its gaps, and for a live window its score (and
        with ``live``, LIVE_MODE=off, its verdict unless a newer one is stored).

        A report (``report.historical``) stores its gaps, tagged ``historical``, and
        drops only the older gaps inside its own window; the series document (the
        live score every reader and the health stream follow) is left alone.
        """
        key = {"symbol": report.symbol, "timeframe": report.timeframe}
        await self.save_gaps(gaps, cycle_id, epoch, session, historical=report.historical)
        # Gaps starting at or after the window's end are not this audit's to judge:
        # the live tail may have found them in slots not yet due for a cycle.
        others = {**key, "cycle_id": {"$ne": cycle_id}}
        in_window = {
            **others,
            "start_time": {
                "$gte": to_dt(report.window_start_ms),
                "$lt": to_dt(report.window_end_ms),
            },
        }
        # Gaps that scrolled out of the live window go, except those a report found
        # there: a report's gaps stay listed until an audit of their range drops them.
        scrolled = (
            None
            if report.historical
            else {
                **others,
                "start_time": {"$lt": to_dt(report.window_start_ms)},
                "historical": {"$ne": True},
            }
        )
        await gap_writes.retire(
            self._db[GAPS],
            in_window,
            scrolled,
            all_stored=report.gaps_not_stored == 0,
            retention_s=self._retention_s,
            session=session,
        )
        if report.historical:
            return
        # $set, not a replace: the series' settled record (written by default-window
        # cycles) still holds, since no audit changes documents, and the live verdict
        # is not the cycle's unless ``live``. The report itself lives in the cycle's
        # parts; 0.1.0 also kept a copy here, removed on write.
        ops = cycle_writes(report.health, epoch, live=live, unset=("report",))
        await self._db[SERIES].bulk_write(ops, ordered=True, session=session)

    async def save_gaps(
        self,
        gaps: Sequence[GapRecord],
        cycle_id: str,
        epoch: int,
        session: Any = None,
        *,
        historical: bool = False,
    ) -> None:
        """Upserts one batch of gaps; a report's are tagged ``historical`` (see save_series).
        Each keeps the identity and lifecycle of the stored gap it continues
        (:mod:`auditsvc.storage.mongo.gap_writes`)."""
        await gap_writes.upsert_gaps(
            self._db[GAPS],
            gaps,
            cycle_id,
            epoch,
            historical=historical,
            retention_s=self._retention_s,
            session=session,
        )

    async def save_cycle(self, cycle: Cycle, session: Any = None) -> None:
        await self._db[CYCLES].replace_one(
            {"_id": cycle.cycle_id}, codec.cycle_doc(cycle), upsert=True, session=session
        )

    async def save_cycle_reports(
        self,
        cycle_id: str,
        finished_ms: int,
        part: int,
        reports: Sequence[SeriesReport],
        session: Any = None,
    ) -> None:
        doc = codec.reports_doc(cycle_id, finished_ms, part, reports)
        await self._db[CYCLE_REPORTS].replace_one(
            {"_id": doc["_id"]}, doc, upsert=True, session=session
        )

    async def get_cycle(self, cycle_id: str) -> Cycle | None:
        doc = await self._db[CYCLES].find_one({"_id": cycle_id})
        return None if doc is None else await self._with_reports(doc)

    async def last_cycle(self, with_series: bool = True) -> Cycle | None:
        """The newest stored cycle; without its reports (one small read) unless asked."""
        # Cycles stored before reports moved to parts hold them in the header.
        projection = None if with_series else {"series": 0}
        docs = (
            await self._db[CYCLES].find({}, projection).sort("started_at", -1).limit(1).to_list(1)
        )
        if not docs:
            return None
        return await self._with_reports(docs[0]) if with_series else codec.cycle_record(docs[0])

    async def _with_reports(self, doc: dict[str, Any]) -> Cycle:
        parts = self._db[CYCLE_REPORTS].find({"cycle_id": doc["_id"]}).sort("part", 1)
        series = tuple(
            codec.report_record(r) for part in await parts.to_list(None) for r in part["series"]
        )
        return codec.cycle_record(doc, series)

    async def last_success_ms(self) -> int | None:
        """When the newest successful *scheduled* cycle finished. RunAudit cycles do not
        count: they cover a selection, so they must not postpone the full schedule."""
        docs = (
            await self._db[CYCLES]
            .find({"succeeded": True, "trigger": SCHEDULED}, {"finished_at": 1})
            .sort("started_at", -1)
            .limit(1)
            .to_list(1)
        )
        return to_ms(docs[0]["finished_at"]) if docs else None

    async def list_gaps(self, q: GapQuery) -> list[GapRecord]:
        clauses: list[dict[str, Any]] = []
        if q.symbol:
            clauses.append({"symbol": q.symbol})
        if q.timeframe:
            clauses.append({"timeframe": q.timeframe})
        if q.start_ms is not None:
            clauses.append({"end_time": {"$gt": to_dt(q.start_ms)}})
        if q.end_ms is not None:
            clauses.append({"start_time": {"$lt": to_dt(q.end_ms)}})
        if q.min_missing:
            clauses.append({"missing_candles": {"$gte": q.min_missing}})
        clauses.append(_states_clause(q.states or DEFAULT_LISTED))
        if q.after is not None:
            sym, tf, start = q.after
            clauses.append(
                {
                    "$or": [
                        {"symbol": {"$gt": sym}},
                        {"symbol": sym, "timeframe": {"$gt": tf}},
                        {"symbol": sym, "timeframe": tf, "start_time": {"$gt": to_dt(start)}},
                    ]
                }
            )
        query = {"$and": clauses} if clauses else {}
        cursor = (
            self._db[GAPS]
            .find(query)
            .sort([("symbol", 1), ("timeframe", 1), ("start_time", 1)])
            .limit(q.limit)
        )
        return [codec.gap_record(d) for d in await cursor.to_list(q.limit)]

    async def gap_state_counts(self) -> list[tuple[GapState, int]]:
        """Stored gaps per state (one group per state); a gap stored before states
        existed counts as documents.gap_state says."""
        cursor = await self._db[GAPS].aggregate(
            [
                {
                    "$group": {
                        "_id": {
                            "state": "$state",
                            "requested": {"$ne": [{"$ifNull": ["$backfill_request_id", ""]}, ""]},
                        },
                        "n": {"$sum": 1},
                    }
                }
            ]
        )
        counts: dict[GapState, int] = {}
        for d in await cursor.to_list(None):
            key = d["_id"]
            legacy = {"backfill_request_id": "x" if key.get("requested") else ""}
            state = codec.gap_state({"state": key.get("state"), **legacy})
            counts[state] = counts.get(state, 0) + int(d["n"])
        return sorted(counts.items(), key=lambda kv: list(GapState).index(kv[0]))

    async def scores(self) -> list[ScoreRecord]:
        docs = await self._db[SERIES].find({}, {"report": 0}).to_list(None)
        return [codec.score_record(d) for d in docs]

    async def list_scores(self, q: ScoreQuery) -> list[ScoreRecord]:
        clauses: list[dict[str, Any]] = []
        if q.symbols:
            clauses.append({"symbol": {"$in": list(q.symbols)}})
        if q.timeframes:
            clauses.append({"timeframe": {"$in": list(q.timeframes)}})
        if q.state is SeriesState.UNKNOWN:
            clauses.append({"state": None})  # never judged: no stored state
        elif q.state is not None:
            clauses.append({"state": q.state.value})
        if q.after is not None:
            # _id is "symbol|timeframe", so the (symbol, timeframe) order is the _id order
            # only when no symbol is a prefix of another; compare the fields instead.
            sym, tf = q.after
            clauses.append(
                {"$or": [{"symbol": {"$gt": sym}}, {"symbol": sym, "timeframe": {"$gt": tf}}]}
            )
        query = {"$and": clauses} if clauses else {}
        cursor = (
            self._db[SERIES]
            .find(query, {"report": 0})
            .sort([("symbol", 1), ("timeframe", 1)])
            .limit(q.limit)
        )
        return [codec.score_record(d) for d in await cursor.to_list(q.limit)]

    async def watch_scores(self) -> AsyncIterator[ScoreRecord]:
        """New scores as any replica stores them, from one shared database watch.

        Returns once that watch is open, so a snapshot read after this call misses
        nothing stored in between; raises if the watch cannot be opened.
        """
        queue: asyncio.Queue[ScoreRecord | BaseException] = asyncio.Queue(_SUBSCRIBER_BACKLOG)
        self._watchers.add(queue)
        try:
            if self._pump is None or self._pump.done() or self._opened is None:
                self._opened = opened = asyncio.get_running_loop().create_future()
                self._pump = asyncio.create_task(self._pump_scores(opened), name="score-watch")
            await asyncio.shield(self._opened)
        except BaseException:
            self._unwatch(queue)
            raise
        return self._drain(queue)

    async def _drain(
        self, queue: asyncio.Queue[ScoreRecord | BaseException]
    ) -> AsyncIterator[ScoreRecord]:
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._unwatch(queue)

    def _unwatch(self, queue: asyncio.Queue[ScoreRecord | BaseException]) -> None:
        self._watchers.discard(queue)
        if not self._watchers and self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def _pump_scores(self, opened: asyncio.Future[None]) -> None:
        try:
            async for record in self._watch_database(opened):
                for queue in list(self._watchers):
                    try:
                        queue.put_nowait(record)
                    except asyncio.QueueFull:
                        # A subscriber this far behind is cut off (its client
                        # reconnects and gets a fresh snapshot) rather than
                        # letting its backlog grow without bound.
                        self._watchers.discard(queue)
                        _last_word(queue, Unavailable("health stream subscriber fell behind"))
            # The stream ended (an invalidate event): tell subscribers, or they wait forever.
            for queue in list(self._watchers):
                _last_word(queue, Unavailable("health stream ended; reconnect"))
        except Exception as exc:
            if not opened.done():
                opened.set_exception(exc)
                opened.exception()  # its waiters re-raise it; never "never retrieved"
            for queue in list(self._watchers):
                _last_word(queue, exc)
        finally:
            if not opened.done():
                opened.cancel()

    async def _watch_database(self, opened: asyncio.Future[None]) -> AsyncIterator[ScoreRecord]:
        """A change stream, else polling. Resolves ``opened`` once either has begun."""
        try:
            async with await self._db[SERIES].watch(full_document="updateLookup") as stream:
                # Entering the context opened the stream: changes from here on are ours.
                opened.set_result(None)
                async for change in stream:
                    doc = change.get("fullDocument")
                    if doc is not None:
                        yield codec.score_record(doc)
            return
        except PyMongoError as exc:
            if "not supported" not in str(exc) and "replica set" not in str(exc):
                raise
            log.info("change streams unavailable; polling scores", extra={"reason": str(exc)})
        since = dt.datetime.now(dt.UTC)
        if not opened.done():
            opened.set_result(None)
        while True:
            # changed_at: the database's time of either writer's last change (a
            # cycle's score or the tail's verdict), so neither is missed.
            docs = (
                await self._db[SERIES]
                .find({"changed_at": {"$gt": since}}, {"report": 0})
                .sort("changed_at", 1)
                .to_list(None)
            )
            for doc in docs:
                since = max(since, doc["changed_at"])
                yield codec.score_record(doc)
            await asyncio.sleep(self._poll_interval)

    async def get_request(self, kind: str, request_id: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self._db[REQUESTS].find_one(
            {"_id": f"{kind}:{request_id}"}
        )
        return doc

    async def put_request(
        self,
        kind: str,
        request_id: str,
        body_hash: str,
        result: dict[str, Any],
        epoch: int,
        session: Any = None,
    ) -> None:
        # Insert-only: the first stored result wins, so a deposed leader that
        # finishes late can never replace what a newer leader already answered.
        # Look first: inside a transaction a duplicate-key error would abort it.
        key = {"_id": f"{kind}:{request_id}"}
        if await self._db[REQUESTS].find_one(key, {"_id": 1}, session=session) is not None:
            return
        with contextlib.suppress(DuplicateKeyError):
            await self._db[REQUESTS].insert_one(
                {
                    "_id": f"{kind}:{request_id}",
                    "kind": kind,
                    "body_hash": body_hash,
                    "result": result,
                    "epoch": epoch,
                    "at": dt.datetime.now(dt.UTC),
                },
                session=session,
            )


def _states_clause(states: Sequence[GapState]) -> dict[str, Any]:
    """Gaps in ``states``; a gap stored before states existed has none, and is
    OPEN or BACKFILL_REQUESTED by whether it names a request (documents.gap_state)."""
    wanted: list[dict[str, Any]] = [{"state": {"$in": [s.value for s in states]}}]
    no_state = {"state": {"$exists": False}}
    if GapState.OPEN in states:
        wanted.append({**no_state, "backfill_request_id": {"$in": ["", None]}})
    if GapState.BACKFILL_REQUESTED in states:
        wanted.append({**no_state, "backfill_request_id": {"$nin": ["", None]}})
    return {"$or": wanted}


def _last_word(queue: asyncio.Queue[ScoreRecord | BaseException], exc: BaseException) -> None:
    """Ends a subscriber's stream with ``exc``, making room for it if need be."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(exc)
