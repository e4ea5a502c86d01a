"""A cycle's writes of gap documents (``audit_gaps``): found gaps upserted with
their identity kept, and gaps no longer found marked FILLED or dropped.

Guarantees:
- **One writer per field.** A cycle sets what it measures (range, size,
  severity, cycle) and fills only absent lifecycle fields; the state, attempts and
  ``backfill_request_id`` of a still-missing gap belong to the healing pass
  (:mod:`auditsvc.usecases.healing`) and are never overwritten here.
- **Identity.** A found gap that starts where a stored, still-missing gap starts,
  or inside one (its front was filled), is written under that gap's ``_id``: it
  keeps its detection time, attempts and request. A gap found again where a
  FILLED one started opens a new incident in that document (state OPEN, attempts 0).
- **FILLED, never guessed.** A still-missing gap inside the audited window that
  the cycle did not find is FILLED (``filled_at`` the database's now) only when
  the series' report stored every gap it found; otherwise (AUDIT_MAX_GAPS_PER_SERIES
  dropped some) it is removed as before states existed.
- **Acknowledged.** A found gap the cycle judged inside an acknowledged window
  (``GapRecord.state`` ACKNOWLEDGED) is written ACKNOWLEDGED; one stored
  ACKNOWLEDGED that no acknowledgement covers any more is OPEN again.
- **History expires.** FILLED, UNFILLABLE and ACKNOWLEDGED gaps carry
  ``expires_at`` (now + GAP_HISTORY_RETENTION; a TTL index removes them). An
  UNFILLABLE or ACKNOWLEDGED gap found again pushes it on, so it stays listed
  while it is still missing.

Limits: a gap split in two by a fill in its middle keeps the identity for its
first part only; identity follows the latest-starting stored gap that holds the
found one's start, so a FILLED record nested inside an older still-missing one
hides it (the gap is then a new record, and the older one is retired as not
found).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne

from auditsvc.domain.gap_lifecycle import GapState, severity_rank
from auditsvc.domain.records import GapRecord
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import to_dt, to_ms

_FILLED = GapState.FILLED.value
_UNFILLABLE = GapState.UNFILLABLE.value
_OPEN = GapState.OPEN.value
_ACKNOWLEDGED = GapState.ACKNOWLEDGED.value
# Series per identity read (a bounded $in).
_SERIES_PER_READ = 64
# GAP_HISTORY_RETENTION's default, for stores built without settings.
DEFAULT_RETENTION_S = 7 * 86400


async def upsert_gaps(
    col: Any,
    gaps: Sequence[GapRecord],
    cycle_id: str,
    epoch: int,
    *,
    historical: bool,
    retention_s: int,
    session: Any = None,
) -> None:
    """Upserts one batch of found gaps (see the module docstring)."""
    if not gaps:
        return
    ids = await _identities(col, gaps, session)
    ops = [
        UpdateOne(
            {"_id": ids[i]},
            _found(g, cycle_id, epoch, historical=historical, retention_s=retention_s),
            upsert=True,
        )
        for i, g in enumerate(gaps)
    ]
    await col.bulk_write(ops, ordered=False, session=session)


async def _identities(col: Any, gaps: Sequence[GapRecord], session: Any) -> list[str]:
    """The ``_id`` each gap is written under: its own key (series + start) when a
    still-missing gap is stored there, else that of the stored still-missing gap
    whose range holds its start (its front was filled, or the window slid past
    it), else its own key. When several stored gaps hold that start, the latest
    starting one decides: a FILLED one there gives the gap its own key.

    Cost per batch: one ``_id $in`` read; then, only for gaps not found by their own
    key, one read per timeframe and ``_SERIES_PER_READ`` series of the stored gaps
    overlapping the span of those gaps' starts. Never a read per series or per
    gap: a series whose data begins after the window's start has a gap starting
    at the window's start, a new start every cycle (measured: 600 reads and 7 s of
    a 9 s cycle of 200 series on SecantusDB).
    """
    own = [codec.gap_doc(g, "", 0)["_id"] for g in gaps]
    stored = {
        str(d["_id"]): d.get("state")
        for d in await col.find({"_id": {"$in": own}}, {"state": 1}, session=session).to_list(None)
    }
    out = [key if key in stored and stored[key] != _FILLED else "" for key in own]
    pending = [i for i in range(len(gaps)) if not out[i]]
    holders = await _holders(col, [gaps[i] for i in pending], session)
    taken = {key for key in out if key}
    # In start order, so the gap starting where a stored one starts claims it first.
    for i in sorted(pending, key=lambda i: _order(gaps[i])):
        g = gaps[i]
        out[i] = own[i]
        covering = [
            d
            for d in holders.get((g.symbol, g.timeframe), ())
            if to_ms(d["start_time"]) <= g.start_ms < to_ms(d["end_time"])
        ]
        if covering:
            d = max(covering, key=lambda d: to_ms(d["start_time"]))
            held = str(d["_id"])
            if d.get("state") != _FILLED and held not in taken:
                out[i] = held
        taken.add(out[i])
    return out


async def _holders(
    col: Any, gaps: Sequence[GapRecord], session: Any
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The stored gaps of these gaps' series that overlap the span of their starts,
    by series; a bounded ``$in`` per read."""
    by_tf: dict[str, list[GapRecord]] = {}
    for g in gaps:
        by_tf.setdefault(g.timeframe, []).append(g)
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for tf, some in by_tf.items():
        symbols = sorted({g.symbol for g in some})
        lo = min(g.start_ms for g in some)
        hi = max(g.start_ms for g in some)
        for first in range(0, len(symbols), _SERIES_PER_READ):
            part = symbols[first : first + _SERIES_PER_READ]
            query = {
                "symbol": part[0] if len(part) == 1 else {"$in": part},
                "timeframe": tf,
                "start_time": {"$lte": to_dt(hi)},
                "end_time": {"$gt": to_dt(lo)},
            }
            fields = {"symbol": 1, "start_time": 1, "end_time": 1, "state": 1}
            for d in await col.find(query, fields, session=session).to_list(None):
                found.setdefault((d["symbol"], tf), []).append(d)
    return found


def _order(g: GapRecord) -> tuple[str, str, int]:
    return g.symbol, g.timeframe, g.start_ms


def _found(
    g: GapRecord, cycle_id: str, epoch: int, *, historical: bool, retention_s: int
) -> list[dict[str, Any]]:
    """The pipeline update of one found gap (see the module docstring)."""
    was = {"$ifNull": ["$state", None]}
    # A new document, or a FILLED one found missing again: a new incident.
    fresh = {"$or": [{"$eq": [was, None]}, {"$eq": [was, _FILLED]}]}

    def keep(field: str, default: Any) -> dict[str, Any]:
        return {"$cond": [fresh, {"$literal": default}, {"$ifNull": [f"${field}", default]}]}

    measured = {
        "symbol": {"$literal": g.symbol},
        "timeframe": {"$literal": g.timeframe},
        "start_time": {"$literal": to_dt(g.start_ms)},
        "end_time": {"$literal": to_dt(g.end_ms)},
        "missing_candles": g.missing_candles,
        "severity": {"$literal": g.severity.value},
        "severity_rank": severity_rank(g.severity),
        "length_ms": g.end_ms - g.start_ms,
        "cycle_id": {"$literal": cycle_id},
        "epoch": epoch,
        # When this epoch wrote it (detected_at is the incident's first sighting).
        "written_at": "$$NOW",
        "historical": historical,
    }
    legacy_state = {
        "$cond": [
            {"$ne": [{"$ifNull": ["$backfill_request_id", ""]}, ""]},
            GapState.BACKFILL_REQUESTED.value,
            _OPEN,
        ]
    }
    acknowledged = g.state is GapState.ACKNOWLEDGED
    if acknowledged:
        # Inside an acknowledged window now: whatever it was, it is ACKNOWLEDGED.
        state: Any = _ACKNOWLEDGED
    else:
        state = {
            "$cond": [
                # A new incident, or an acknowledgement that no longer covers it.
                {"$or": [fresh, {"$eq": [was, _ACKNOWLEDGED]}]},
                _OPEN,
                {"$ifNull": ["$state", legacy_state]},
            ]
        }
    # History expires: an acknowledged gap, or an UNFILLABLE one still found, stays
    # GAP_HISTORY_RETENTION past its last sighting.
    keeps_history = True if acknowledged else {"$eq": [was, _UNFILLABLE]}
    lifecycle = {
        "state": state,
        "attempts": keep("attempts", 0),
        "backfill_request_id": keep("backfill_request_id", ""),
        "detected_at": keep("detected_at", to_dt(g.detected_ms)),
        "detected_live": keep("detected_live", g.detected_live),
        "filled_at": "$$REMOVE",
        "expires_at": {
            "$cond": [keeps_history, {"$add": ["$$NOW", retention_s * 1000]}, "$$REMOVE"]
        },
    }
    return [{"$set": {**measured, **lifecycle}}]


async def retire(
    col: Any,
    in_window: dict[str, Any],
    scrolled_out: dict[str, Any] | None,
    *,
    all_stored: bool,
    retention_s: int,
    session: Any = None,
) -> None:
    """Gaps the cycle did not find: inside its window (``in_window``) FILLED when
    ``all_stored``, else removed; before it (``scrolled_out``) removed. History
    (documents with ``expires_at``) is left to its TTL."""
    pending = {"expires_at": {"$exists": False}}
    if all_stored:
        await col.update_many(
            {**in_window, "state": {"$ne": _FILLED}},
            [
                {
                    "$set": {
                        "state": _FILLED,
                        "filled_at": "$$NOW",
                        # The healing pass observes detection-to-fill, then clears it.
                        "fill_unreported": True,
                        "expires_at": {"$add": ["$$NOW", retention_s * 1000]},
                    }
                }
            ],
            session=session,
        )
    else:
        await col.delete_many({**in_window, **pending}, session=session)
    if scrolled_out is not None:
        await col.delete_many({**scrolled_out, **pending}, session=session)
