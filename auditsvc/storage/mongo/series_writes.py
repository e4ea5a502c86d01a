"""The writes of a series document (``audit_series``), by owner, so that no
writer can replace a field another writer owns.

* A cycle owns the score and counts (:func:`~auditsvc.storage.mongo.documents.cycle_fields`)
  and the settled record; it writes them with ``$set``, never a whole-document
  replace, so the live fields survive it.
* The live verdict (:func:`~auditsvc.storage.mongo.documents.live_fields`) is
  owned by the live tail, or by cycles when LIVE_MODE=off. Its write is
  guarded: it applies only when the stored verdict was observed no later than
  the new one, so an observation never replaces a newer one, whichever writer
  finishes last.
* Every write stamps ``changed_at`` with the database's clock, which is what a
  reader without change streams polls on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateOne

from auditsvc.domain.records import LiveVerdict, ScoreRecord
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import to_dt


def series_id(symbol: str, timeframe: str) -> str:
    return f"{symbol}|{timeframe}"


def cycle_writes(
    record: ScoreRecord,
    epoch: int,
    *,
    live: bool,
    also_set: Mapping[str, Any] | None = None,
    unset: Sequence[str] = (),
) -> list[UpdateOne]:
    """A cycle's write of one series: its own fields, and with ``live`` its verdict
    (none when the cycle could not judge the state). Apply in order."""
    update: dict[str, Any] = {
        "$set": {**codec.cycle_fields(record), "epoch": epoch, **(also_set or {})},
        "$currentDate": {"changed_at": True},
    }
    if unset:
        update["$unset"] = dict.fromkeys(unset, "")
    ops = [UpdateOne({"_id": series_id(record.symbol, record.timeframe)}, update, upsert=True)]
    verdict = codec.verdict_of(record) if live else None
    if verdict is not None:
        ops.append(_verdict_write(verdict, epoch))
    return ops


def verdict_writes(verdict: LiveVerdict, epoch: int) -> list[UpdateOne]:
    """The live tail's write of one series' verdict (the document is created if
    need be, holding no cycle field until a cycle scores it). Apply in order."""
    key = series_id(verdict.symbol, verdict.timeframe)
    create = UpdateOne(
        {"_id": key},
        {"$setOnInsert": {"symbol": verdict.symbol, "timeframe": verdict.timeframe}},
        upsert=True,
    )
    return [create, _verdict_write(verdict, epoch)]


def _verdict_write(verdict: LiveVerdict, epoch: int) -> UpdateOne:
    not_newer = {
        "$or": [{"verdict_at": None}, {"verdict_at": {"$lte": to_dt(verdict.observed_ms)}}]
    }
    return UpdateOne(
        {"_id": series_id(verdict.symbol, verdict.timeframe), **not_newer},
        {
            "$set": {**codec.live_fields(verdict), "live_epoch": epoch},
            "$currentDate": {"changed_at": True},
        },
    )
