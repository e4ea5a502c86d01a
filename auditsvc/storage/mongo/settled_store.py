"""The results of default-window cycles, many series per write: each series'
score with its settled record (one ``audit_series`` document, field ``settled``)
and the removal of gaps the cycle no longer found (``audit_gaps``).

One call writes a bounded chunk of series (the caller's chunk size) with two
bulk operations, so a cycle's cost in round trips and transaction size is per
chunk, not per series; each series is ONE document update of the cycle's own
fields (a second, guarded one for its verdict with LIVE_MODE=off; see
:mod:`~auditsvc.storage.mongo.series_writes`), never a replace, so neither the
live tail's verdict nor the ``rewrites`` counter of removals and restores is
overwritten (the report is in the cycle's parts, not here).

A stored record vouches only for what it was made from:

* It names its candle collection; :meth:`MongoSettledStore.load` ignores a
  record of another collection (a changed CANDLE_COLLECTION_TEMPLATE), and the
  next save replaces it.
* It carries a ``basis``: the series' ``rewrites`` counter as the cycle that
  made it loaded it. Removals and restores of duplicates change documents that
  no audit changes, possibly older than AUDIT_RECHECK where incremental cycles
  do not look; each one bumps ``rewrites`` (:func:`mark_rewritten`, written by
  them alone) after, or in the same transaction as, its change. A record whose
  basis differs is ignored, so the next cycle scans the series whole and
  reports what a full scan does. A cycle that loaded before a removal and saves
  after it keeps the old basis, so its record is ignored too.

Limit: a series with no ``audit_series`` document yet has no counter to bump;
a removal racing the very first audit of a series is seen at its next full
scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from auditsvc.domain.records import SeriesReport
from auditsvc.domain.settled import Settled
from auditsvc.domain.values import DuplicateSlot, Gap, Window
from auditsvc.storage.mongo import gap_writes
from auditsvc.storage.mongo.database import GAPS, SERIES, Database, to_dt
from auditsvc.storage.mongo.gap_writes import DEFAULT_RETENTION_S
from auditsvc.storage.mongo.series_writes import cycle_writes

# Series looked up by _id; more read the timeframe's records in one pass.
_LOOKUP_LIMIT = 1000


def _key(symbol: str, timeframe: str) -> str:
    return f"{symbol}|{timeframe}"


# The audit_series field that removals and restores bump; see the module docstring.
REWRITES = "rewrites"


def settled_doc(s: Settled, collection: str = "", basis: int = 0) -> dict[str, Any]:
    # Plain ms integers and arrays: compact, and only this module reads them.
    return {
        "collection": collection,
        "basis": basis,
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


def _vouches(doc: Mapping[str, Any], collection: str) -> bool:
    """Whether ``doc``'s record describes ``collection`` as it stands (see the module)."""
    record = doc.get("settled")
    if not isinstance(record, Mapping) or record.get("collection") != collection:
        return False
    return int(record.get("basis", 0)) == int(doc.get(REWRITES, 0))


async def mark_rewritten(db: Any, keys: Sequence[tuple[str, str]], session: Any = None) -> None:
    """Bumps the ``rewrites`` of these (symbol, timeframe) series: their settled
    records no longer vouch for their documents. Call it after the change, or in
    its transaction."""
    if keys:
        await db[SERIES].update_many(
            {"_id": {"$in": sorted({_key(s, tf) for s, tf in keys})}},
            {"$inc": {REWRITES: 1}},
            session=session,
        )


class MongoSettledStore:
    def __init__(self, database: Database, gap_retention_s: int = DEFAULT_RETENTION_S) -> None:
        self._db = database.db
        # GAP_HISTORY_RETENTION: how long filled gaps stay listed.
        self._retention_s = gap_retention_s

    async def load(
        self, collection: str, timeframe: str, symbols: Sequence[str]
    ) -> tuple[dict[str, Settled], dict[str, int]]:
        """(the records that vouch for these series in ``collection``, each found
        series' ``rewrites``), in one query; absent ones are missing."""
        if len(symbols) > _LOOKUP_LIMIT:
            # Many series: one pass over the timeframe's documents beats a huge $in.
            query: dict[str, Any] = {"timeframe": timeframe}
        else:
            query = {"_id": {"$in": [_key(s, timeframe) for s in symbols]}}
        wanted = set(symbols)
        docs = await (
            self._db[SERIES].find(query, {"symbol": 1, "settled": 1, REWRITES: 1}).to_list(None)
        )
        ours = [d for d in docs if d.get("symbol") in wanted]
        records = {
            d["symbol"]: settled_record(d["settled"]) for d in ours if _vouches(d, collection)
        }
        return records, {d["symbol"]: int(d.get(REWRITES, 0)) for d in ours}

    async def save_chunk(
        self,
        reports: Sequence[SeriesReport],
        settled: Mapping[str, Settled | None],
        *,
        collection: str,
        basis: Mapping[str, int] | None = None,
        cycle_id: str,
        epoch: int,
        live: bool = False,
        session: Any = None,
    ) -> None:
        """Stores the series of one chunk (same timeframe and window end): their score
        with their settled record (dropped when None), naming ``collection`` and
        resting on ``basis`` (each series' ``rewrites`` as ``load`` returned it;
        0 when missing), and drops their gaps this cycle did not write
        (``save_gaps`` wrote the others before). With ``live`` (LIVE_MODE=off) the
        cycle's verdicts too, unless a newer one is stored."""
        if not reports:
            return
        timeframe, window_end = reports[0].timeframe, reports[0].window_end_ms
        if any(r.timeframe != timeframe or r.window_end_ms != window_end for r in reports):
            raise ValueError("a chunk holds one timeframe and one window end")
        # Gaps starting at or after the window's end are the live tail's, and a report's
        # gaps before the window stay listed (the same rule as save_series).
        window_start = min(r.window_start_ms for r in reports)
        others = {"timeframe": timeframe, "cycle_id": {"$ne": cycle_id}}
        in_window = {"start_time": {"$gte": to_dt(window_start), "$lt": to_dt(window_end)}}
        # A series whose report dropped gaps (AUDIT_MAX_GAPS_PER_SERIES) cannot tell a
        # filled gap from an unstored one: its unfound gaps are removed, not FILLED.
        for all_stored in (True, False):
            chosen = [r.symbol for r in reports if (r.gaps_not_stored == 0) is all_stored]
            if not chosen:
                continue
            series = {**others, "symbol": {"$in": chosen}}
            await gap_writes.retire(
                self._db[GAPS],
                {**series, **in_window},
                {**series, "start_time": {"$lt": to_dt(window_start)}, "historical": {"$ne": True}},
                all_stored=all_stored,
                retention_s=self._retention_s,
                session=session,
            )
        basis = basis or {}
        series_ops = []
        for r in reports:
            record = settled.get(r.symbol)
            # None: no record, the next audit is a full scan.
            kept = (
                {}
                if record is None
                else {"settled": settled_doc(record, collection, basis.get(r.symbol, 0))}
            )
            series_ops += cycle_writes(
                r.health,
                epoch,
                live=live,
                also_set=kept,
                unset=("report",) if kept else ("report", "settled"),
            )
        # Ordered: a series' verdict write follows its creation.
        await self._db[SERIES].bulk_write(series_ops, ordered=True, session=session)
