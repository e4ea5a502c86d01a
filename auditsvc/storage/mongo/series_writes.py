"""The writes of a series document (``audit_series``), by owner, so that no
writer can replace a field another writer owns.

* A cycle owns the score and counts (:func:`~auditsvc.storage.mongo.documents.cycle_fields`)
  and the settled record; it writes them with ``$set``, never a whole-document
  replace, so the live fields survive it.
* The live verdict (:func:`~auditsvc.storage.mongo.documents.live_fields`) is
  owned by the live tail, or by cycles when LIVE_MODE=off. Its write is
  guarded: it applies only when the stored verdict was observed no later than
  the new one, so an observation never replaces a newer one, whichever writer
  finishes last. The guard is inside the update (a pipeline), not in its
  filter, so each series is one update found by ``_id``.
* The content fields: ``anomaly_count``, ``validity`` and ``suspect`` are the
  cycle's (with its score); ``live_suspect_until`` is the live tail's
  (:func:`live_suspect_write`), only ever raised, and served ``suspect`` is
  either (``auditsvc.domain.validity.served_suspect``).
* Every write stamps ``changed_at`` with the database's clock, which is what a
  reader without change streams polls on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import UpdateOne

from auditsvc.domain.records import LiveVerdict, ScoreRecord
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import EPOCH, to_dt


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
    need be, holding no cycle field until a cycle scores it)."""
    return [_verdict_write(verdict, epoch, create=True)]


def _verdict_write(verdict: LiveVerdict, epoch: int, *, create: bool = False) -> UpdateOne:
    """One update by ``_id`` alone (a filter on the stored time as well made some
    servers scan the collection for every series): a pipeline whose every field
    keeps its stored value unless the stored verdict is no newer than this one."""
    not_newer = {"$lte": [{"$ifNull": ["$verdict_at", EPOCH]}, to_dt(verdict.observed_ms)]}
    fields = {**codec.live_fields(verdict), "live_epoch": epoch}
    guarded: dict[str, Any] = {
        name: {"$cond": [not_newer, {"$literal": value}, f"${name}"]}
        for name, value in fields.items()
    }
    guarded["changed_at"] = "$$NOW"
    if create:
        guarded["symbol"] = {"$literal": verdict.symbol}
        guarded["timeframe"] = {"$literal": verdict.timeframe}
    return UpdateOne(
        {"_id": series_id(verdict.symbol, verdict.timeframe)}, [{"$set": guarded}], upsert=create
    )


def live_suspect_write(symbol: str, timeframe: str, until_ms: int, epoch: int) -> UpdateOne:
    """The live tail's raise of a series' suspect horizon (``$max``: never lowered by
    a concurrent or late write); creates the document if need be."""
    return UpdateOne(
        {"_id": series_id(symbol, timeframe)},
        {
            "$max": {"live_suspect_until": to_dt(until_ms)},
            "$set": {"live_suspect_epoch": epoch},
            "$setOnInsert": {"symbol": symbol, "timeframe": timeframe},
            "$currentDate": {"changed_at": True},
        },
        upsert=True,
    )


def live_suspect_clear(symbol: str, timeframe: str, passed_ms: int, epoch: int) -> UpdateOne:
    """The live tail's end of a passed horizon: ``live_suspect_until`` becomes null if
    it is at or before ``passed_ms`` (a later one, raised meanwhile, stays), and
    ``changed_at`` moves, so a score stream re-serves the series and pushes the
    end of ``suspect``. One update by ``_id`` (a pipeline, like the verdict's)."""
    passed = {"$lte": ["$live_suspect_until", {"$literal": to_dt(passed_ms)}]}
    return UpdateOne(
        {"_id": series_id(symbol, timeframe)},
        [
            {
                "$set": {
                    "live_suspect_until": {"$cond": [passed, None, "$live_suspect_until"]},
                    "live_suspect_epoch": {"$cond": [passed, epoch, "$live_suspect_epoch"]},
                    "changed_at": {"$cond": [passed, "$$NOW", "$changed_at"]},
                }
            }
        ],
    )
