"""Candle content findings (``audit_anomalies``): recorded by cycles and the live
tail, resolved by cycles, listed by ListAnomalies.

Guarantees:

* **One finding per key.** A document's ``_id`` is ``symbol|timeframe|open ms|rule``,
  so a cycle and the live tail that find the same fault write one document
  (an upsert). The first writer's ``detected_at`` and ``detected_live`` are kept;
  later writes refresh what was measured (detail, field, values), ``seen_at``
  (the writer's clock) and ``epoch``. :meth:`MongoAnomalyStore.record` returns the
  findings that were new, so a metric counts each finding once.
* **Fenced.** Every write takes the fenced batch's session and stores the writer's
  epoch; callers run them inside ``Fence.write_fenced`` like the gap writes.
* **Resolution deletes.** A cycle hands :meth:`resolve` the ranges it read and the
  rules it judged there; a finding in such a range that was last seen before the
  cycle's read began (so neither this cycle nor the tail since re-found it) is
  deleted: its candle was corrected or removed. Resolved findings are not kept
  listed: ListAnomalies answers "what is wrong now", and a corrected candle that
  breaks again is a new finding with a new ``detected_at``.
* **Bounded work.** Resolution and counts are one query per distinct range (the
  symbols of a chunk in one ``$in``), listing is one paged query on
  ``by_series_time_rule``.

Limits: ``seen_at`` is on the writing leader's clock (the cycle and the tail of one
leader share it); after a take-over by a leader whose clock is behind, a finding
the old leader saw "later" survives one more cycle before it is resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateOne

from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.records import AnomalyQuery, AnomalyRecord
from auditsvc.storage.interfaces import AnomalyCounts, JudgedRange
from auditsvc.storage.mongo.database import ANOMALIES, SERIES, Database, to_dt, to_ms
from auditsvc.storage.mongo.series_writes import live_suspect_clear, live_suspect_write


def anomaly_id(symbol: str, timeframe: str, open_ms: int, rule: AnomalyRule) -> str:
    return f"{symbol}|{timeframe}|{open_ms}|{rule.value}"


def _upsert(r: AnomalyRecord, epoch: int) -> UpdateOne:
    a = r.anomaly
    measured = {
        "symbol": {"$literal": r.symbol},
        "timeframe": {"$literal": r.timeframe},
        "open_time": {"$literal": to_dt(a.open_time_ms)},
        "rule": {"$literal": a.rule.value},
        "detail": {"$literal": a.detail},
        "field": {"$literal": a.field},
        "observed": {"$literal": a.observed},
        "expected": {"$literal": a.expected},
        "seen_at": {"$literal": to_dt(r.detected_ms)},
        "epoch": epoch,
        "written_at": "$$NOW",
        # The first writer's: a cycle re-finding what the tail found keeps both.
        "detected_at": {"$ifNull": ["$detected_at", {"$literal": to_dt(r.detected_ms)}]},
        "detected_live": {"$ifNull": ["$detected_live", {"$literal": r.detected_live}]},
    }
    key = anomaly_id(r.symbol, r.timeframe, a.open_time_ms, a.rule)
    return UpdateOne({"_id": key}, [{"$set": measured}], upsert=True)


def anomaly_record(d: Mapping[str, Any]) -> AnomalyRecord:
    observed, expected = d.get("observed"), d.get("expected")
    anomaly = Anomaly(
        open_time_ms=to_ms(d["open_time"]),
        rule=AnomalyRule(d["rule"]),
        detail=str(d.get("detail", "")),
        field=d.get("field"),
        observed=None if observed is None else float(observed),
        expected=None if expected is None else float(expected),
    )
    return AnomalyRecord(
        symbol=d["symbol"],
        timeframe=d["timeframe"],
        anomaly=anomaly,
        detected_ms=to_ms(d["detected_at"]),
        detected_live=bool(d.get("detected_live", False)),
    )


class MongoAnomalyStore:
    """The :class:`~auditsvc.storage.interfaces.AnomalyStore` over ``audit_anomalies``."""

    def __init__(self, database: Database) -> None:
        self._db = database.db
        self._col = database.db[ANOMALIES]

    async def record(
        self, findings: Sequence[AnomalyRecord], epoch: int, session: Any = None
    ) -> list[AnomalyRecord]:
        """Upserts findings (one bulk write); returns those that were not stored yet.

        Each record's ``detected_ms`` is the writer's now (stored as ``seen_at``, and
        as ``detected_at`` when new), ``detected_live`` whether the writer is the tail.
        """
        if not findings:
            return []
        unique = list({f.key: f for f in findings}.values())
        result = await self._col.bulk_write(
            [_upsert(f, epoch) for f in unique], ordered=False, session=session
        )
        return [unique[i] for i in sorted(result.upserted_ids or {})]

    async def resolve(
        self, judged: Sequence[JudgedRange], seen_before_ms: int, session: Any = None
    ) -> int:
        """Deletes the findings of ``judged`` last seen before ``seen_before_ms``."""
        removed = 0
        for j in judged:
            if not j.symbols or not j.rules or j.start_ms >= j.end_ms:
                continue
            result = await self._col.delete_many(
                {
                    "symbol": {"$in": list(j.symbols)} if len(j.symbols) > 1 else j.symbols[0],
                    "timeframe": j.timeframe,
                    "open_time": {"$gte": to_dt(j.start_ms), "$lt": to_dt(j.end_ms)},
                    "rule": {"$in": sorted(r.value for r in j.rules)},
                    "seen_at": {"$lt": to_dt(seen_before_ms)},
                },
                session=session,
            )
            removed += result.deleted_count
        return removed

    async def counts(
        self,
        timeframe: str,
        symbols: Sequence[str],
        start_ms: int,
        end_ms: int,
        session: Any = None,
    ) -> dict[str, AnomalyCounts]:
        """Per symbol with a finding in ``[start_ms, end_ms)``: its findings, the distinct
        candles they name and the newest of those (one grouped query)."""
        if not symbols:
            return {}
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "symbol": {"$in": list(symbols)},
                    "timeframe": timeframe,
                    "open_time": {"$gte": to_dt(start_ms), "$lt": to_dt(end_ms)},
                }
            },
            {
                "$group": {
                    "_id": {"symbol": "$symbol", "open_time": "$open_time"},
                    "n": {"$sum": 1},
                }
            },
            {
                "$group": {
                    "_id": "$_id.symbol",
                    "findings": {"$sum": "$n"},
                    "candles": {"$sum": 1},
                    "newest": {"$max": "$_id.open_time"},
                }
            },
        ]
        cursor = await self._col.aggregate(pipeline, session=session)
        return {
            d["_id"]: AnomalyCounts(
                int(d["findings"]),
                int(d["candles"]),
                None if d.get("newest") is None else to_ms(d["newest"]),
            )
            for d in await cursor.to_list(None)
        }

    async def list(self, q: AnomalyQuery) -> list[AnomalyRecord]:
        """Stored findings matching ``q``, by (symbol, timeframe, open time, rule)."""
        clauses: list[dict[str, Any]] = []
        if q.symbol:
            clauses.append({"symbol": q.symbol})
        if q.timeframe:
            clauses.append({"timeframe": q.timeframe})
        if q.rules:
            clauses.append({"rule": {"$in": sorted(r.value for r in q.rules)}})
        if q.start_ms is not None:
            clauses.append({"open_time": {"$gte": to_dt(q.start_ms)}})
        if q.end_ms is not None:
            clauses.append({"open_time": {"$lt": to_dt(q.end_ms)}})
        if q.after is not None:
            sym, tf, open_ms, rule = q.after
            at = to_dt(open_ms)
            clauses.append(
                {
                    "$or": [
                        {"symbol": {"$gt": sym}},
                        {"symbol": sym, "timeframe": {"$gt": tf}},
                        {"symbol": sym, "timeframe": tf, "open_time": {"$gt": at}},
                        {"symbol": sym, "timeframe": tf, "open_time": at, "rule": {"$gt": rule}},
                    ]
                }
            )
        query = {"$and": clauses} if clauses else {}
        cursor = (
            self._col.find(query)
            .sort([("symbol", 1), ("timeframe", 1), ("open_time", 1), ("rule", 1)])
            .limit(q.limit)
        )
        return [anomaly_record(d) for d in await cursor.to_list(q.limit)]

    async def raise_live_suspect(
        self, horizons: Mapping[tuple[str, str], int], epoch: int, session: Any = None
    ) -> None:
        """The live tail's side of ``suspect``: each (symbol, timeframe) is served
        suspect at least until its instant (ms). Only ever raised (``$max``), so
        concurrent writes cannot lower it; the series document is created if need be."""
        if horizons:
            ops = [
                live_suspect_write(sym, tf, until_ms, epoch)
                for (sym, tf), until_ms in sorted(horizons.items())
            ]
            await self._db[SERIES].bulk_write(ops, ordered=False, session=session)

    async def clear_live_suspect(
        self, keys: Sequence[tuple[str, str]], passed_ms: int, epoch: int, session: Any = None
    ) -> None:
        """Clears each series' horizon that is at or before ``passed_ms`` (one bulk
        write): ``suspect`` served from it has ended, and the write makes the series
        document change, so every replica's score stream pushes it at once."""
        if keys:
            ops = [live_suspect_clear(sym, tf, passed_ms, epoch) for sym, tf in sorted(set(keys))]
            await self._db[SERIES].bulk_write(ops, ordered=False, session=session)

    async def suspect_counts(self, now_ms: int) -> dict[str, int]:
        """Series served suspect at ``now_ms`` (the cycle's flag, or the tail's horizon
        not yet reached), by timeframe: one grouped query over the series documents."""
        cursor = await self._db[SERIES].aggregate(
            [
                {
                    "$match": {
                        "$or": [
                            {"suspect": True},
                            {"live_suspect_until": {"$gt": to_dt(now_ms)}},
                        ]
                    }
                },
                {"$group": {"_id": "$timeframe", "n": {"$sum": 1}}},
            ]
        )
        return {str(d["_id"]): int(d["n"]) for d in await cursor.to_list(None)}
