"""The results of default-window cycles, many series per write: each series'
settled record (``audit_settled``), its score and report (``audit_series``) and
the removal of gaps the cycle no longer found (``audit_gaps``).

One call writes a bounded chunk of series (the caller's chunk size) with three
bulk operations, so a cycle's cost in round trips and transaction size is per
chunk, not per series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import DeleteOne, ReplaceOne

from auditsvc.domain.records import SeriesReport
from auditsvc.domain.settled import Settled
from auditsvc.domain.values import DuplicateSlot, Gap, Window
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import GAPS, SERIES, SETTLED, Database, to_dt

# Series looked up by _id; more read the timeframe's records in one pass.
_LOOKUP_LIMIT = 1000


def _key(symbol: str, timeframe: str) -> str:
    return f"{symbol}|{timeframe}"


def settled_doc(symbol: str, timeframe: str, s: Settled, epoch: int) -> dict[str, Any]:
    # Plain ms integers and arrays: compact, and only this module reads them.
    return {
        "_id": _key(symbol, timeframe),
        "symbol": symbol,
        "timeframe": timeframe,
        "window": [s.window.start_ms, s.window.end_ms],
        "gaps": [[g.start_ms, g.end_ms, g.missing_candles] for g in s.gaps],
        "duplicates": [[d.timestamp_ms, d.count] for d in s.duplicates],
        "misaligned": list(s.misaligned),
        "since_full": s.since_full,
        "epoch": epoch,
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
            # Many series: one pass over the timeframe's records beats a huge $in.
            query: dict[str, Any] = {"timeframe": timeframe}
        else:
            query = {"_id": {"$in": [_key(s, timeframe) for s in symbols]}}
        wanted = set(symbols)
        docs = await self._db[SETTLED].find(query).to_list(None)
        return {d["symbol"]: settled_record(d) for d in docs if d["symbol"] in wanted}

    async def save_chunk(
        self,
        reports: Sequence[SeriesReport],
        settled: Mapping[str, Settled | None],
        *,
        cycle_id: str,
        epoch: int,
        session: Any = None,
    ) -> None:
        """Stores the series of one chunk (same timeframe and window end): their score and
        report, their settled record (removed when None) and drops their gaps this cycle
        did not write (``save_gaps`` wrote the others before)."""
        if not reports:
            return
        timeframe, window_end = reports[0].timeframe, reports[0].window_end_ms
        if any(r.timeframe != timeframe or r.window_end_ms != window_end for r in reports):
            raise ValueError("a chunk holds one timeframe and one window end")
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
        series_ops = [
            ReplaceOne(
                {"_id": _key(r.symbol, r.timeframe)},
                {**codec.score_doc(r.health), "report": codec.report_doc(r), "epoch": epoch},
                upsert=True,
            )
            for r in reports
        ]
        await self._db[SERIES].bulk_write(series_ops, ordered=False, session=session)
        settled_ops: list[Any] = []
        for r in reports:
            record = settled.get(r.symbol)
            if record is None:
                settled_ops.append(DeleteOne({"_id": _key(r.symbol, r.timeframe)}))
            else:
                doc = settled_doc(r.symbol, r.timeframe, record, epoch)
                settled_ops.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
        await self._db[SETTLED].bulk_write(settled_ops, ordered=False, session=session)
