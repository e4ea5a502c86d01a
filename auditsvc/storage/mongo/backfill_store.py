"""Backfill requests, and the gap lifecycle fields they drive.

Requests are written by the leader and executed by the data writers. A request
is live while ``open: true``; the partial unique index on ``gap_key`` guarantees
that a gap never has two open requests, even if two cycles race. The service
closes a request itself (``status: filled`` or ``expired``, ``open: false``); a
writer may close it too, with any status.

Each write here takes the caller's session: the healing pass runs every one
inside ``fence.write_fenced``, and a request and the gap it changes are written
in the same transaction.

Limit: the reads are bounded by ``limit`` (the healing pass pages the rest at its
next run), and ``$in`` lists by the caller's batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pymongo.errors import DuplicateKeyError

from auditsvc.domain.gap_lifecycle import EXPIRED, FILLED, PENDING, GapState
from auditsvc.domain.records import BackfillRequest, FillReport, LiveRequest, TrackedGap
from auditsvc.domain.values import Severity
from auditsvc.storage.mongo.database import BACKFILLS, GAPS, Database, to_dt, to_ms
from auditsvc.storage.mongo.documents import gap_state


def gap_key(symbol: str, timeframe: str, start_ms: int) -> str:
    # Keyed by where the gap starts: a gap that grows at its end is the same gap.
    return f"{symbol}|{timeframe}|{start_ms}"


class MongoBackfillStore:
    def __init__(self, database: Database) -> None:
        self._col = database.db[BACKFILLS]
        self._gaps = database.db[GAPS]

    async def open_request_id(self, symbol: str, timeframe: str, start_ms: int) -> str | None:
        doc = await self._col.find_one(
            {"gap_key": gap_key(symbol, timeframe, start_ms), "open": True}, {"request_id": 1}
        )
        return None if doc is None else str(doc["request_id"])

    async def open_count(self) -> int:
        """Live requests: those that count against MAX_AUTO_BACKFILL_JOBS."""
        count: int = await self._col.count_documents({"open": True})
        return count

    async def create(self, req: BackfillRequest, session: Any = None) -> str:
        """Inserts the request; returns the open request's id if one already exists."""
        key = gap_key(req.symbol, req.timeframe, req.start_ms)
        existing = await self._col.find_one({"gap_key": key, "open": True}, session=session)
        if existing is not None:
            return str(existing["request_id"])
        at = to_dt(req.created_ms) if req.created_ms else dt.datetime.now(dt.UTC)
        doc = {
            "_id": req.request_id,
            "request_id": req.request_id,
            "gap_key": key,
            "gap_id": req.gap_id or key,
            "symbol": req.symbol,
            "timeframe": req.timeframe,
            "start_time": to_dt(req.start_ms),
            "end_time": to_dt(req.end_ms),
            "missing_candles": req.missing_candles,
            "priority": req.priority,
            "status": PENDING,
            "open": True,
            "created_at": at,
            "progress_at": at,
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

    async def live_requests(self, limit: int) -> list[LiveRequest]:
        """Up to ``limit`` open requests, oldest progress first."""
        docs = (
            await self._col.find({"open": True}).sort("progress_at", 1).limit(limit).to_list(limit)
        )
        return [_live_request(d) for d in docs]

    async def open_among(self, request_ids: Sequence[str]) -> set[str]:
        """Which of ``request_ids`` (one batch) are still open."""
        docs = await self._col.find(
            {"_id": {"$in": list(request_ids)}, "open": True}, {"_id": 1}
        ).to_list(None)
        return {str(d["_id"]) for d in docs}

    async def gaps_by_id(self, gap_ids: Sequence[str]) -> dict[str, TrackedGap]:
        docs = await self._gaps.find({"_id": {"$in": list(gap_ids)}}).to_list(None)
        return {str(d["_id"]): _tracked(d) for d in docs}

    async def requested_gaps(self, limit: int) -> list[TrackedGap]:
        """Up to ``limit`` gaps in BACKFILL_REQUESTED (their request may have been closed)."""
        docs = (
            await self._gaps.find({"state": GapState.BACKFILL_REQUESTED.value})
            .limit(limit)
            .to_list(limit)
        )
        return [_tracked(d) for d in docs]

    async def candidates(
        self, cycle_id: str, min_length_ms: int, now_ms: int
    ) -> AsyncIterator[TrackedGap]:
        """The cycle's OPEN gaps that may be requested now, worst first: severity,
        then length, then recency."""
        # Length and backoff are checked here, not in the filter: SecantusDB's planner
        # scans the collection for a filter beyond the index's fields.
        cursor = self._gaps.find({"cycle_id": cycle_id, "state": GapState.OPEN.value}).sort(
            [("severity_rank", 1), ("missing_candles", -1), ("start_time", -1)]
        )
        async for d in cursor:
            waits = d.get("next_request_at")
            if int(d.get("length_ms", 0)) < min_length_ms or (
                waits is not None and to_ms(waits) > now_ms
            ):
                continue
            yield _tracked(d)

    async def request(self, req: BackfillRequest, attempts: int, session: Any = None) -> str:
        """Writes the request and marks its gap BACKFILL_REQUESTED (one more attempt)."""
        made = await self.create(req, session)
        await self._gaps.update_one(
            {"_id": req.gap_id},
            {
                "$set": {
                    "state": GapState.BACKFILL_REQUESTED.value,
                    "backfill_request_id": made,
                    "attempts": attempts,
                    "requested_at": to_dt(req.created_ms),
                }
            },
            session=session,
        )
        return made

    async def close(self, request_id: str, status: str, now_ms: int, session: Any = None) -> bool:
        """Closes an open request with ``status``; False if it was no longer open."""
        result = await self._col.update_one(
            {"_id": request_id, "open": True},
            {"$set": {"open": False, "status": status, "closed_at": to_dt(now_ms)}},
            session=session,
        )
        return bool(result.modified_count)

    async def progress(
        self, request_id: str, missing: int, now_ms: int, session: Any = None
    ) -> None:
        """The request's gap shrank: its BACKFILL_TIMEOUT starts again from now."""
        await self._col.update_one(
            {"_id": request_id, "open": True},
            {"$set": {"missing_candles": missing, "progress_at": to_dt(now_ms)}},
            session=session,
        )

    async def release(
        self,
        gap_id: str,
        request_id: str,
        state: GapState,
        next_request_ms: int,
        expires_ms: int | None,
        session: Any = None,
    ) -> None:
        """A request for the gap ended without filling it: OPEN until ``next_request_ms``,
        or UNFILLABLE (kept until ``expires_ms``). Only while the gap still names it."""
        fields: dict[str, Any] = {"state": state.value, "next_request_at": to_dt(next_request_ms)}
        if expires_ms is not None:
            fields["expires_at"] = to_dt(expires_ms)
        await self._gaps.update_one(
            {
                "_id": gap_id,
                "backfill_request_id": request_id,
                "state": GapState.BACKFILL_REQUESTED.value,
            },
            {"$set": fields},
            session=session,
        )

    async def mark_filled(self, gap_id: str, retention_ms: int, session: Any = None) -> bool:
        """A requested gap found whole: FILLED now, kept ``retention_ms``; False if it
        was no longer BACKFILL_REQUESTED."""
        result = await self._gaps.update_one(
            {"_id": gap_id, "state": GapState.BACKFILL_REQUESTED.value},
            [
                {
                    "$set": {
                        "state": GapState.FILLED.value,
                        "filled_at": "$$NOW",
                        "expires_at": {"$add": ["$$NOW", retention_ms]},
                        "fill_unreported": True,
                    }
                }
            ],
            session=session,
        )
        return bool(result.modified_count)

    async def live_by_timeframe(self) -> dict[str, int]:
        """Open requests per timeframe (one small aggregation: a group per timeframe)."""
        cursor = await self._col.aggregate(
            [{"$match": {"open": True}}, {"$group": {"_id": "$timeframe", "n": {"$sum": 1}}}]
        )
        return {str(d["_id"]): int(d["n"]) for d in await cursor.to_list(None)}

    async def unreported_fills(self, limit: int) -> list[FillReport]:
        docs = (
            await self._gaps.find(
                {"fill_unreported": True}, {"timeframe": 1, "detected_at": 1, "filled_at": 1}
            )
            .limit(limit)
            .to_list(limit)
        )
        return [
            FillReport(
                str(d["_id"]), d["timeframe"], to_ms(d["detected_at"]), to_ms(d["filled_at"])
            )
            for d in docs
            if d.get("filled_at") is not None
        ]

    async def mark_reported(self, gap_ids: Sequence[str], session: Any = None) -> None:
        await self._gaps.update_many(
            {"_id": {"$in": list(gap_ids)}}, {"$unset": {"fill_unreported": ""}}, session=session
        )

    async def expire(self, request_id: str, now_ms: int, session: Any = None) -> bool:
        return await self.close(request_id, EXPIRED, now_ms, session)

    async def close_filled(self, request_id: str, now_ms: int, session: Any = None) -> bool:
        return await self.close(request_id, FILLED, now_ms, session)


def _live_request(d: dict[str, Any]) -> LiveRequest:
    # Requests written before states existed have no gap_id, size or progress time.
    at = d.get("progress_at") or d["created_at"]
    return LiveRequest(
        request_id=str(d["_id"]),
        gap_id=str(d.get("gap_id") or d["gap_key"]),
        missing_candles=int(d.get("missing_candles", 0)),
        progress_ms=to_ms(at),
        timeframe=str(d.get("timeframe", "")),
    )


def _tracked(d: dict[str, Any]) -> TrackedGap:
    return TrackedGap(
        gap_id=str(d["_id"]),
        symbol=d["symbol"],
        timeframe=d["timeframe"],
        start_ms=to_ms(d["start_time"]),
        end_ms=to_ms(d["end_time"]),
        missing_candles=int(d["missing_candles"]),
        severity=Severity(d["severity"]),
        state=gap_state(d),
        attempts=int(d.get("attempts", 0)),
        backfill_request_id=str(d.get("backfill_request_id") or ""),
    )
