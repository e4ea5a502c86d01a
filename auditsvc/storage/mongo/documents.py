"""Documents <-> service records for the audit-state collections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.records import (
    Cycle,
    CycleSummary,
    GapRecord,
    LiveVerdict,
    ScoreRecord,
    SeriesReport,
)
from auditsvc.domain.series_state import LiveState, SeriesState
from auditsvc.domain.values import HealthScore, Severity
from auditsvc.storage.mongo.database import to_dt, to_ms


def cycle_fields(s: ScoreRecord) -> dict[str, Any]:
    """The fields of a series document a cycle owns: its score and counts."""
    h = s.score
    return {
        "symbol": s.symbol,
        "timeframe": s.timeframe,
        "quality": h.quality,
        "completeness": h.completeness,
        "consistency": h.consistency,
        "freshness": h.freshness,
        "gap_count": h.gap_count,
        "duplicate_groups": h.duplicate_groups,
        "computed_at": to_dt(s.computed_ms),
        "cycle_id": s.cycle_id,
        "anomaly_count": s.anomaly_count,
        "validity": s.validity,
        "suspect": s.suspect,
    }


def live_fields(v: LiveVerdict) -> dict[str, Any]:
    """The fields of a series document the live verdict owns (the live tail's, or the
    cycle's with LIVE_MODE=off): the state and when it was observed."""
    live = v.live
    return {
        "state": live.state.value,
        "last_candle_open": None if live.last_candle_ms is None else to_dt(live.last_candle_ms),
        "late_candles": live.late_candles,
        "verdict_at": to_dt(v.observed_ms),
    }


def verdict_of(s: ScoreRecord) -> LiveVerdict | None:
    """The verdict a score carries, None when its writer could not judge the state."""
    if s.state is None or s.verdict_ms is None:
        return None
    live = LiveState(s.state, s.last_candle_ms, s.late_candles)
    return LiveVerdict(s.symbol, s.timeframe, live, s.verdict_ms)


def score_doc(s: ScoreRecord) -> dict[str, Any]:
    """A whole score, as cycle reports and summaries keep it (not a series document)."""
    v = verdict_of(s)
    fields = {**cycle_fields(s), "state": None, "last_candle_open": None, "late_candles": 0}
    return fields if v is None else {**fields, **live_fields(v)}


def score_record(d: dict[str, Any]) -> ScoreRecord:
    """A stored series document; one the live tail created before any cycle scored
    the series has no cycle fields, and reads as unaudited (completeness and
    consistency 100, as :func:`~auditsvc.domain.series_state.rescore` assumes)."""
    state = SeriesState(d["state"]) if d.get("state") else None
    verdict = to_ms(d["verdict_at"]) if d.get("verdict_at") else None
    return ScoreRecord(
        symbol=d["symbol"],
        timeframe=d["timeframe"],
        score=HealthScore(
            quality=float(d.get("quality", 0.0)),
            completeness=float(d.get("completeness", 100.0)),
            consistency=float(d.get("consistency", 100.0)),
            freshness=float(d.get("freshness", 0.0)),
            gap_count=int(d.get("gap_count", 0)),
            duplicate_groups=int(d.get("duplicate_groups", 0)),
        ),
        computed_ms=to_ms(d["computed_at"]) if d.get("computed_at") else (verdict or 0),
        cycle_id=d.get("cycle_id", ""),
        state=state,
        last_candle_ms=to_ms(d["last_candle_open"]) if d.get("last_candle_open") else None,
        late_candles=int(d.get("late_candles", 0)),
        verdict_ms=verdict,
        changed_ms=to_ms(d["changed_at"]) if d.get("changed_at") else 0,
        anomaly_count=int(d.get("anomaly_count", 0)),
        validity=float(d.get("validity", 100.0)),
        suspect=bool(d.get("suspect", False)),
        live_suspect_until_ms=(
            to_ms(d["live_suspect_until"]) if d.get("live_suspect_until") else None
        ),
    )


_REPORT_INTS = (
    "expected_candles",
    "present_candles",
    "missing_candles",
    "gap_count",
    "duplicate_groups",
    "surplus_documents",
    "misaligned_candles",
    "backfills_requested",
    "backfills_skipped",
    "gaps_not_stored",
    "acknowledged_gap_count",
    "acknowledged_missing_candles",
)


def report_doc(r: SeriesReport) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "symbol": r.symbol,
        "timeframe": r.timeframe,
        "window_start": to_dt(r.window_start_ms),
        "window_end": to_dt(r.window_end_ms),
        "health": score_doc(r.health),
        "historical": r.historical,
    }
    doc.update({k: getattr(r, k) for k in _REPORT_INTS})
    return doc


def report_record(d: dict[str, Any]) -> SeriesReport:
    return SeriesReport(
        symbol=d["symbol"],
        timeframe=d["timeframe"],
        window_start_ms=to_ms(d["window_start"]),
        window_end_ms=to_ms(d["window_end"]),
        health=score_record(d["health"]),
        historical=bool(d.get("historical", False)),
        **{k: int(d.get(k, 0)) for k in _REPORT_INTS},
    )


def cycle_doc(c: Cycle) -> dict[str, Any]:
    """The cycle's header: its reports are stored apart, in parts (``reports_doc``)."""
    doc: dict[str, Any] = {
        "_id": c.cycle_id,
        "started_at": to_dt(c.started_ms),
        "finished_at": to_dt(c.finished_ms),
        "served_by": c.served_by,
        "epoch": c.epoch,
        "trigger": c.trigger,
        "succeeded": c.succeeded,
        "error": c.error,
        "historical": c.historical,
    }
    if c.summary is not None:
        doc["summary"] = summary_doc(c.summary)
    return doc


def cycle_record(d: dict[str, Any], series: tuple[SeriesReport, ...] = ()) -> Cycle:
    """``series``: the reports read from the parts; cycles stored before parts existed
    hold theirs in the header."""
    return Cycle(
        cycle_id=d["_id"],
        started_ms=to_ms(d["started_at"]),
        finished_ms=to_ms(d["finished_at"]),
        served_by=d["served_by"],
        epoch=int(d["epoch"]),
        trigger=d.get("trigger", ""),
        succeeded=bool(d.get("succeeded", True)),
        error=d.get("error", ""),
        series=series or tuple(report_record(r) for r in d.get("series", [])),
        summary=summary_record(d["summary"]) if d.get("summary") else None,
        stored_historical=bool(d.get("historical", False)),
    )


def reports_doc(
    cycle_id: str, finished_ms: int, part: int, reports: Sequence[SeriesReport]
) -> dict[str, Any]:
    """One part of a cycle's reports; parts keep each document and write bounded."""
    return {
        "_id": f"{cycle_id}|{part:06d}",
        "cycle_id": cycle_id,
        "part": part,
        # Expires with its cycle (same TTL index on finished_at).
        "finished_at": to_dt(finished_ms),
        "series": [report_doc(r) for r in reports],
    }


def summary_doc(s: CycleSummary) -> dict[str, Any]:
    return {
        "series_count": s.series_count,
        "states": [[None if st is None else st.value, n] for st, n in s.states],
        "open_gaps": s.open_gaps,
        "min_quality": s.min_quality,
        "median_quality": s.median_quality,
        "worst": [score_doc(w) for w in s.worst],
    }


def summary_record(d: dict[str, Any]) -> CycleSummary:
    return CycleSummary(
        series_count=int(d["series_count"]),
        states=tuple((SeriesState(st) if st else None, int(n)) for st, n in d["states"]),
        open_gaps=int(d["open_gaps"]),
        min_quality=float(d["min_quality"]),
        median_quality=float(d["median_quality"]),
        worst=tuple(score_record(w) for w in d["worst"]),
    )


def gap_doc(g: GapRecord, cycle_id: str, epoch: int) -> dict[str, Any]:
    return {
        "_id": f"{g.symbol}|{g.timeframe}|{g.start_ms}",
        "symbol": g.symbol,
        "timeframe": g.timeframe,
        "start_time": to_dt(g.start_ms),
        "end_time": to_dt(g.end_ms),
        "missing_candles": g.missing_candles,
        "severity": g.severity.value,
        "backfill_request_id": g.backfill_request_id,
        "detected_at": to_dt(g.detected_ms),
        "cycle_id": cycle_id,
        "epoch": epoch,
        "detected_live": g.detected_live,
    }


def gap_record(d: dict[str, Any]) -> GapRecord:
    return GapRecord(
        symbol=d["symbol"],
        timeframe=d["timeframe"],
        start_ms=to_ms(d["start_time"]),
        end_ms=to_ms(d["end_time"]),
        missing_candles=int(d["missing_candles"]),
        severity=Severity(d["severity"]),
        detected_ms=to_ms(d["detected_at"]),
        backfill_request_id=d.get("backfill_request_id", ""),
        detected_live=bool(d.get("detected_live", False)),
        state=gap_state(d),
        filled_ms=to_ms(d["filled_at"]) if d.get("filled_at") is not None else None,
        attempts=int(d.get("attempts", 0)),
    )


def gap_state(d: dict[str, Any]) -> GapState:
    """A stored gap's state; one stored before states existed is OPEN, or
    BACKFILL_REQUESTED when it names a request."""
    stored = d.get("state")
    if stored:
        return GapState(stored)
    return GapState.BACKFILL_REQUESTED if d.get("backfill_request_id") else GapState.OPEN
