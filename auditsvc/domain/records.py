"""Service-level records: what an audit cycle, a gap listing or a duplicate
resolution produced, as stored and as served. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.series_state import LiveState, SeriesState
from auditsvc.domain.values import HealthScore, Role, Severity, Strategy

# How long stored cycles, and the request_id records that point at them, are kept.
RESULT_TTL_DAYS = 14
# Cycle.trigger of the scheduler's full cycles; only these drive the schedule and
# the last-success gauge (the stalled-audit alert).
SCHEDULED = "schedule"


@dataclass(frozen=True, slots=True)
class GapRecord:
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    missing_candles: int
    severity: Severity
    detected_ms: int
    backfill_request_id: str = ""
    # Found by the live tail as a later candle arrived, before any cycle.
    detected_live: bool = False
    state: GapState = GapState.OPEN
    # When a cycle found the slots present (FILLED only).
    filled_ms: int | None = None
    # Backfill requests made for the gap so far.
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    symbol: str
    timeframe: str
    score: HealthScore
    computed_ms: int
    cycle_id: str
    # Live state when stored; None for scores stored before live state existed.
    state: SeriesState | None = None
    last_candle_ms: int | None = None
    late_candles: int = 0
    # When the writer of the live fields observed that state (ms); see
    # auditsvc.domain.verdict for how a served verdict is dated.
    verdict_ms: int | None = None
    # The database's time of the stored document's last change, by either writer:
    # orders two readings of one series (0 when unknown).
    changed_ms: int = 0
    # Content findings on candles of the scored window, and the validity score
    # (auditsvc.domain.validity): the cycle's fields, like the score.
    anomaly_count: int = 0
    validity: float = 100.0
    # A finding lies within the last VALIDITY_SUSPECT_SLOTS slots of the live edge:
    # as stored by the cycle, and as served (the tail's horizon below included).
    suspect: bool = False
    # The live tail's side of ``suspect`` (its own field): suspect until this
    # instant because the tail found a candle at the live edge wrong.
    live_suspect_until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LiveVerdict:
    """A series' live state as its owner observed it at ``observed_ms``: what the
    live tail stores (and with LIVE_MODE=off, the cycle)."""

    symbol: str
    timeframe: str
    live: LiveState
    observed_ms: int


@dataclass(frozen=True, slots=True)
class SeriesReport:
    symbol: str
    timeframe: str
    window_start_ms: int
    window_end_ms: int
    expected_candles: int
    present_candles: int
    missing_candles: int
    gap_count: int
    duplicate_groups: int
    surplus_documents: int
    misaligned_candles: int
    backfills_requested: int
    backfills_skipped: int
    health: ScoreRecord
    # The window ended before the live edge (the settled end of the default window
    # when audited): a report. Its gaps are stored, but it never replaces the
    # series' live score, the health stream or the health-score gauge.
    historical: bool = False
    # Counted in gap_count but not stored (AUDIT_MAX_GAPS_PER_SERIES).
    gaps_not_stored: int = 0
    # Inside acknowledged windows: counted here, not in gap_count, missing or expected.
    acknowledged_gap_count: int = 0
    acknowledged_missing_candles: int = 0


@dataclass(frozen=True, slots=True)
class CycleSummary:
    """A cycle in constant size: what GetStatus's BASIC view shows instead of every report."""

    series_count: int
    # (state, series in it), one entry per state present; None is "not known".
    states: tuple[tuple[SeriesState | None, int], ...]
    open_gaps: int
    min_quality: float
    median_quality: float
    # At most WORST_SERIES scores, lowest quality first.
    worst: tuple[ScoreRecord, ...]
    # Stored gaps per state, one entry per state present (GetStatus's summary only).
    gap_states: tuple[tuple[GapState, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Cycle:
    cycle_id: str
    started_ms: int
    finished_ms: int
    served_by: str
    epoch: int
    trigger: str
    # Empty when the cycle was read without its reports (see ``summary``).
    series: tuple[SeriesReport, ...] = ()
    succeeded: bool = True
    error: str = ""
    # None for cycles stored before summaries existed.
    summary: CycleSummary | None = None
    # What ``historical`` was when stored, for a cycle read without its series
    # (GetStatus BASIC); ignored while the series are present.
    stored_historical: bool = False

    @property
    def historical(self) -> bool:
        """Every series of the cycle is a report (see SeriesReport.historical), so the
        cycle changed no live score."""
        if not self.series:
            return self.stored_historical
        return all(r.historical for r in self.series)


@dataclass(frozen=True, slots=True)
class GroupReport:
    timestamp_ms: int
    kept_id: str
    removed_ids: tuple[str, ...]
    document_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DuplicateReport:
    request_id: str
    strategy: Strategy
    dry_run: bool
    removal_enabled: bool
    duplicate_groups: int
    surplus_documents: int
    documents_removed: int
    documents_archived: int
    served_by: str
    epoch: int
    message: str
    groups: tuple[GroupReport, ...] = ()
    # Groups that changed between the grouping and their batch, left untouched.
    groups_skipped: int = 0
    # Timestamps (ms) of the first REPORTED_GROUPS of them.
    skipped_timestamps: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    leader_id: str
    leader_address: str
    epoch: int
    is_self: bool
    elected_ms: int | None
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class Status:
    replica_id: str
    role: Role
    auditor_enabled: bool
    last_cycle: Cycle | None
    next_cycle_ms: int | None
    series_count: int
    version: str
    database_reachable: bool
    leader_id: str
    epoch: int
    # Every configured series from the stored scores, as served now; None when
    # they could not be read (the last cycle's summary stands in).
    summary: CycleSummary | None = None


@dataclass(frozen=True, slots=True)
class GapQuery:
    """ListGaps filters; ``after`` is the decoded page cursor."""

    symbol: str = ""
    timeframe: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    min_missing: int = 0
    limit: int = 100
    after: tuple[str, str, int] | None = None
    # Empty: DEFAULT_LISTED (the gaps still missing and not given up on).
    states: tuple[GapState, ...] = ()


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """A stored content finding: the domain's :class:`Anomaly` on one series, with
    when it was first stored and whether the live tail found it first."""

    symbol: str
    timeframe: str
    anomaly: Anomaly
    detected_ms: int
    detected_live: bool = False

    @property
    def key(self) -> tuple[str, str, int, str]:
        """(symbol, timeframe, open time, rule): one finding per candle and rule."""
        return (self.symbol, self.timeframe, self.anomaly.open_time_ms, self.anomaly.rule.value)


@dataclass(frozen=True, slots=True)
class AnomalyQuery:
    """ListAnomalies filters; ``after`` is the decoded page cursor (a record's key)."""

    symbol: str = ""
    timeframe: str = ""
    rules: tuple[AnomalyRule, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int = 100
    after: tuple[str, str, int, str] | None = None


@dataclass(frozen=True, slots=True)
class ScoreQuery:
    """ListHealthScores filters; ``after`` is the decoded (symbol, timeframe) cursor."""

    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ()
    state: SeriesState | None = None
    limit: int = 100
    after: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    request_id: str
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    priority: int
    epoch: int
    # The gap document's _id, and its size when requested (a request that has not
    # shrunk it within BACKFILL_TIMEOUT expires).
    gap_id: str = ""
    missing_candles: int = 0
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class TrackedGap:
    """What the healing pass reads of a stored gap."""

    gap_id: str
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    missing_candles: int
    severity: Severity
    state: GapState
    attempts: int
    backfill_request_id: str


@dataclass(frozen=True, slots=True)
class FillReport:
    """A gap a cycle found filled, not yet observed in the detection-to-fill metric."""

    gap_id: str
    timeframe: str
    detected_ms: int
    filled_ms: int


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """An open backfill request, as the healing pass judges it."""

    request_id: str
    gap_id: str
    # The gap's size when last seen shrinking (or when requested), and since when.
    missing_candles: int
    progress_ms: int
    timeframe: str = ""


def report_to_dict(r: DuplicateReport) -> dict[str, Any]:
    """A BSON/JSON-safe form, for storing the first result of a request_id."""
    d = asdict(r)
    d["strategy"] = r.strategy.value
    d["groups"] = [
        {**g, "removed_ids": list(g["removed_ids"]), "document_ids": list(g["document_ids"])}
        for g in d["groups"]
    ]
    d["skipped_timestamps"] = list(r.skipped_timestamps)
    return d


def report_from_dict(d: dict[str, Any]) -> DuplicateReport:
    fields = {k: v for k, v in d.items() if k not in ("strategy", "groups", "skipped_timestamps")}
    return DuplicateReport(
        **fields,
        # Absent from results stored before the removal reported skipped groups.
        skipped_timestamps=tuple(int(t) for t in d.get("skipped_timestamps", ())),
        strategy=Strategy(d["strategy"]),
        groups=tuple(
            GroupReport(
                timestamp_ms=int(g["timestamp_ms"]),
                kept_id=g["kept_id"],
                removed_ids=tuple(g["removed_ids"]),
                document_ids=tuple(g["document_ids"]),
            )
            for g in d["groups"]
        ),
    )
