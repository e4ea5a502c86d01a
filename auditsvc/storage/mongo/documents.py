"""Documents <-> service records for the audit-state collections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditsvc.domain.records import Cycle, CycleSummary, GapRecord, ScoreRecord, SeriesReport
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.values import HealthScore, Severity
from auditsvc.storage.mongo.database import to_dt, to_ms


def score_doc(s: ScoreRecord) -> dict[str, Any]:
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
        "state": s.state.value if s.state is not None else None,
        "last_candle_open": None if s.last_candle_ms is None else to_dt(s.last_candle_ms),
        "late_candles": s.late_candles,
    }


def score_record(d: dict[str, Any]) -> ScoreRecord:
    return ScoreRecord(
        symbol=d["symbol"],
        timeframe=d["timeframe"],
        score=HealthScore(
            quality=float(d["quality"]),
            completeness=float(d["completeness"]),
            consistency=float(d["consistency"]),
            freshness=float(d["freshness"]),
            gap_count=int(d["gap_count"]),
            duplicate_groups=int(d["duplicate_groups"]),
        ),
        computed_ms=to_ms(d["computed_at"]),
        cycle_id=d["cycle_id"],
        state=SeriesState(d["state"]) if d.get("state") else None,
        last_candle_ms=to_ms(d["last_candle_open"]) if d.get("last_candle_open") else None,
        late_candles=int(d.get("late_candles", 0)),
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
    )
