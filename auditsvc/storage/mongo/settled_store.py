"""The results of default-window cycles, many series per write: each series'
score with its settled record (one ``audit_series`` document, field ``settled``)
and the removal of gaps the cycle no longer found (``audit_gaps``).

One call writes a bounded chunk of series (the caller's chunk size) with two
bulk operations, so a cycle's cost in round trips and transaction size is per
chunk, not per series; each series is ONE document write, the floor of a cycle
that stores a score per series (the report is in the cycle's parts, not here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ReplaceOne

from auditsvc.domain.records import SeriesReport
from auditsvc.domain.settled import Settled
from auditsvc.domain.values import DuplicateSlot, Gap, Window
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import GAPS, SERIES, Database, to_dt

# Series looked up by _id; more read the timeframe's records in one pass.
_LOOKUP_LIMIT = 1000


def _key(symbol: str, timeframe: str) -> str:
    return f"{symbol}|{timeframe}"


def settled_doc(s: Settled) -> dict[str, Any]:
    # Plain ms integers and arrays: compact, and only this module reads them.
    return {
        "window": [s.window.start_ms, s.window.end_ms],
        "gaps": [[g.start_ms, g.end_ms, g.missing_candles] for g in s.gaps],
        "duplicates": [[d.timestamp_ms, d.count] for d in s.duplicates],
        "misaligned": list(s.misaligned),
        "since_full": s.since_full,
    }


def settled_record(d: Mapping[str, Any]) -> Settled:
    return Settled(
        window=Window(int(d["window"][0]), int(d["window"][1])),
        gaps=tuple(Gap(int(a), int(b), int(n)) for a, b, n in d["gaps"]),
        duplicates=tuple(DuplicateSlot(int(t), int(n)) for t, n in d["duplicates"]),
        misaligned=tuple(int(t) for t in d["misaligned"]),
        since_full=int(d["since_full"]),
    )


class MongoSettledStore:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    async def load(self, timeframe: str, symbols: Sequence[str]) -> dict[str, Settled]:
        """The settled records of these series (one query); absent ones are missing."""
        if len(symbols) > _LOOKUP_LIMIT:
            # Many series: one pass over the timeframe's documents beats a huge $in.
            query: dict[str, Any] = {"timeframe": timeframe}
        else:
            query = {"_id": {"$in": [_key(s, timeframe) for s in symbols]}}
        wanted = set(symbols)
        docs = await self._db[SERIES].find(query, {"symbol": 1, "settled": 1}).to_list(None)
        return {
            d["symbol"]: settled_record(d["settled"])
            for d in docs
            if d.get("settled") and d.get("symbol") in wanted
        }

    async def save_chunk(
        self,
        reports: Sequence[SeriesReport],
        settled: Mapping[str, Settled | None],
        *,
        cycle_id: str,
        epoch: int,
        session: Any = None,
    ) -> None:
        """Stores the series of one chunk (same timeframe and window end): their score
        with their settled record (dropped when None), and drops their gaps this cycle
        did not write (``save_gaps`` wrote the others before)."""
        if not reports:
            return
        timeframe, window_end = reports[0].timeframe, reports[0].window_end_ms
        if any(r.timeframe != timeframe or r.window_end_ms != window_end for r in reports):
            raise ValueError("a chunk holds one timeframe and one window end")
        # Bounded by the caller's chunk (sweep.CHUNK, 500 series): this $in never
        # grows with the number of series.
        symbols = [r.symbol for r in reports]
        # Gaps starting at or after the window's end are the live tail's, and a report's
        # gaps before the window stay listed (the same rule as save_series).
        window_start = min(r.window_start_ms for r in reports)
        await self._db[GAPS].delete_many(
            {
                "timeframe": timeframe,
                "symbol": {"$in": symbols},
                "cycle_id": {"$ne": cycle_id},
                "start_time": {"$lt": to_dt(window_end)},
                "$or": [
                    {"start_time": {"$gte": to_dt(window_start)}},
                    {"historical": {"$ne": True}},
                ],
            },
            session=session,
        )
        series_ops = []
        for r in reports:
            doc = {**codec.score_doc(r.health), "epoch": epoch}
            record = settled.get(r.symbol)
            if record is not None:  # None: no record, the next audit is a full scan
                doc["settled"] = settled_doc(record)
            series_ops.append(ReplaceOne({"_id": _key(r.symbol, r.timeframe)}, doc, upsert=True))
        await self._db[SERIES].bulk_write(series_ops, ordered=False, session=session)
