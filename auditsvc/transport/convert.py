"""Proto messages <-> domain records. Pure functions; the only place that
knows both the generated classes and the domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.acknowledgement import Acknowledgement
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.records import (
    AnomalyRecord,
    Cycle,
    CycleSummary,
    DuplicateReport,
    GapRecord,
    LeaderInfo,
    ScoreRecord,
    SeriesReport,
    Status,
)
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.values import Role, Severity, Strategy

# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
# The largest integer BSON (and so MongoDB) stores; counts are int64 there.
_MAX_INT64 = 2**63 - 1

_ROLES = {
    Role.LEADER: pb.ROLE_LEADER,
    Role.FOLLOWER: pb.ROLE_FOLLOWER,
    Role.STANDALONE: pb.ROLE_STANDALONE,
}
_SEVERITIES = {Severity.MEDIUM: pb.SEVERITY_MEDIUM, Severity.HIGH: pb.SEVERITY_HIGH}
_STRATEGIES: dict[int, Strategy] = {
    pb.STRATEGY_KEEP_NEWEST: Strategy.KEEP_NEWEST,
    pb.STRATEGY_KEEP_OLDEST: Strategy.KEEP_OLDEST,
    pb.STRATEGY_MANUAL: Strategy.MANUAL,
}
_STRATEGY_PB: dict[Strategy, Any] = {v: k for k, v in _STRATEGIES.items()}
_STATES: dict[int, SeriesState] = {
    pb.SERIES_STATE_LIVE: SeriesState.LIVE,
    pb.SERIES_STATE_LATE: SeriesState.LATE,
    pb.SERIES_STATE_NO_DATA: SeriesState.NO_DATA,
    pb.SERIES_STATE_UNKNOWN: SeriesState.UNKNOWN,
}
_STATE_PB: dict[SeriesState, Any] = {v: k for k, v in _STATES.items()}


def ms_from(msg: object, field: str) -> int | None:
    """The field's instant in ms, None when unset; INVALID_ARGUMENT when out of range."""
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: Timestamp = getattr(msg, field)
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(
            "timestamp out of range (0001-01-01..9999-12-31, nanos 0..999999999)", field=field
        )
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def count_from(value: int) -> int:
    """A uint64 count filter as MongoDB can compare it: stored counts are int64, so any
    value above 2**63 - 1 selects exactly what 2**63 - 1 does (nothing real)."""
    return min(int(value), _MAX_INT64)


def ts(ms: int) -> Timestamp:
    seconds, rem = divmod(ms, 1000)
    return Timestamp(seconds=seconds, nanos=rem * 1_000_000)


def strategy_from(value: int) -> Strategy | None:
    """UNSPECIFIED means the configured default (None); unknown numbers are refused."""
    if value == pb.STRATEGY_UNSPECIFIED:
        return None
    try:
        return _STRATEGIES[value]
    except KeyError:
        raise InvalidArgument(f"unknown strategy value {value}", field="strategy") from None


def state_from(value: int) -> SeriesState | None:
    """UNSPECIFIED means any state (None); unknown numbers are refused."""
    if value == pb.SERIES_STATE_UNSPECIFIED:
        return None
    try:
        return _STATES[value]
    except KeyError:
        raise InvalidArgument(f"unknown state value {value}", field="state") from None


_GAP_STATES: dict[int, GapState] = {
    pb.GAP_STATE_OPEN: GapState.OPEN,
    pb.GAP_STATE_BACKFILL_REQUESTED: GapState.BACKFILL_REQUESTED,
    pb.GAP_STATE_FILLED: GapState.FILLED,
    pb.GAP_STATE_UNFILLABLE: GapState.UNFILLABLE,
    pb.GAP_STATE_ACKNOWLEDGED: GapState.ACKNOWLEDGED,
}
_GAP_STATE_PB: dict[GapState, Any] = {v: k for k, v in _GAP_STATES.items()}


def gap_states_from(values: Sequence[int]) -> tuple[GapState, ...]:
    """ListGaps' states, deduplicated in order; UNSPECIFIED and unknown numbers are
    refused (an empty list is the default)."""
    out: list[GapState] = []
    for value in values:
        state = _GAP_STATES.get(value)
        if state is None:
            raise InvalidArgument(
                f"{value} is not a gap state (GAP_STATE_OPEN .. GAP_STATE_ACKNOWLEDGED)",
                field="states",
            )
        if state not in out:
            out.append(state)
    return tuple(out)


# AnomalyRule values are ANOMALY_RULE_ + the domain rule's name (the contract's rule).
_RULES: dict[int, AnomalyRule] = {
    pb.AnomalyRule.Value(f"ANOMALY_RULE_{r.value}"): r for r in AnomalyRule
}
_RULE_PB: dict[AnomalyRule, Any] = {v: k for k, v in _RULES.items()}


def rules_from(values: Sequence[int]) -> tuple[AnomalyRule, ...]:
    """ListAnomalies' rules, deduplicated in order; UNSPECIFIED and unknown numbers
    are refused (an empty list means every rule)."""
    out: list[AnomalyRule] = []
    for value in values:
        rule = _RULES.get(value)
        if rule is None:
            raise InvalidArgument(
                f"{value} is not an anomaly rule (ANOMALY_RULE_PRICE_INVALID .. "
                "ANOMALY_RULE_AGGREGATE_MISMATCH)",
                field="rules",
            )
        if rule not in out:
            out.append(rule)
    return tuple(out)


def rule_pb(rule: AnomalyRule) -> Any:
    return _RULE_PB[rule]


def anomaly_pb(r: AnomalyRecord) -> pb.Anomaly:
    a = r.anomaly
    msg = pb.Anomaly(
        symbol=r.symbol,
        timeframe=r.timeframe,
        open_time=ts(a.open_time_ms),
        rule=_RULE_PB[a.rule],
        detail=a.detail,
        field=a.field or "",
        detected_at=ts(r.detected_ms),
        detected_live=r.detected_live,
    )
    # Unset where the rule has no value; NaN (an unreadable stored value) is sent as is.
    if a.observed is not None:
        msg.observed = a.observed
    if a.expected is not None:
        msg.expected = a.expected
    return msg


def state_pb(state: SeriesState | None) -> Any:
    return pb.SERIES_STATE_UNSPECIFIED if state is None else _STATE_PB[state]


def score_pb(r: ScoreRecord) -> pb.HealthScore:
    h = r.score
    msg = pb.HealthScore(
        symbol=r.symbol,
        timeframe=r.timeframe,
        quality=h.quality,
        completeness=h.completeness,
        consistency=h.consistency,
        freshness=h.freshness,
        gap_count=h.gap_count,
        duplicate_groups=h.duplicate_groups,
        computed_at=ts(r.computed_ms),
        cycle_id=r.cycle_id,
        state=state_pb(r.state),
        late_candles=r.late_candles,
        anomaly_count=r.anomaly_count,
        suspect=r.suspect,
        validity=r.validity,
    )
    if r.last_candle_ms is not None:
        msg.last_candle_open.CopyFrom(ts(r.last_candle_ms))
    if r.verdict_ms is not None:
        msg.verdict_time.CopyFrom(ts(r.verdict_ms))
    return msg


def report_pb(r: SeriesReport) -> pb.SeriesReport:
    return pb.SeriesReport(
        symbol=r.symbol,
        timeframe=r.timeframe,
        window_start=ts(r.window_start_ms),
        window_end=ts(r.window_end_ms),
        expected_candles=r.expected_candles,
        present_candles=r.present_candles,
        missing_candles=r.missing_candles,
        gap_count=r.gap_count,
        duplicate_groups=r.duplicate_groups,
        surplus_documents=r.surplus_documents,
        misaligned_candles=r.misaligned_candles,
        backfills_requested=r.backfills_requested,
        backfills_skipped=r.backfills_skipped,
        acknowledged_gap_count=r.acknowledged_gap_count,
        acknowledged_missing_candles=r.acknowledged_missing_candles,
        health=score_pb(r.health),
        historical=r.historical,
        gaps_not_stored=r.gaps_not_stored,
    )


def cycle_pb(c: Cycle) -> pb.AuditCycle:
    return pb.AuditCycle(
        cycle_id=c.cycle_id,
        started_at=ts(c.started_ms),
        finished_at=ts(c.finished_ms),
        served_by=c.served_by,
        epoch=c.epoch,
        series=[report_pb(r) for r in c.series],
        status=pb.CYCLE_STATUS_SUCCEEDED if c.succeeded else pb.CYCLE_STATUS_FAILED,
        error=c.error,
        trigger=c.trigger,
        historical=c.historical,
    )


def gap_pb(g: GapRecord) -> pb.Gap:
    return pb.Gap(
        symbol=g.symbol,
        timeframe=g.timeframe,
        start_time=ts(g.start_ms),
        end_time=ts(g.end_ms),
        missing_candles=g.missing_candles,
        severity=_SEVERITIES[g.severity],
        backfill_request_id=g.backfill_request_id,
        detected_at=ts(g.detected_ms),
        detected_live=g.detected_live,
        state=_GAP_STATE_PB[g.state],
        filled_at=ts(g.filled_ms) if g.filled_ms is not None else None,
        attempts=g.attempts,
    )


def ack_pb(a: Acknowledgement) -> pb.Acknowledgement:
    return pb.Acknowledgement(
        id=a.ack_id,
        symbols=list(a.symbols),
        timeframes=list(a.timeframes),
        start_time=ts(a.start_ms),
        end_time=ts(a.end_ms),
        reason=a.reason,
        created_at=ts(a.created_ms),
    )


def duplicates_pb(r: DuplicateReport) -> pb.ResolveDuplicatesResponse:
    return pb.ResolveDuplicatesResponse(
        duplicate_groups=r.duplicate_groups,
        surplus_documents=r.surplus_documents,
        documents_removed=r.documents_removed,
        documents_archived=r.documents_archived,
        strategy=_STRATEGY_PB[r.strategy],
        dry_run=r.dry_run,
        served_by=r.served_by,
        epoch=r.epoch,
        groups=[
            pb.DuplicateGroup(
                timestamp=ts(g.timestamp_ms),
                kept_id=g.kept_id,
                removed_ids=list(g.removed_ids),
                document_ids=list(g.document_ids),
            )
            for g in r.groups
        ],
        removal_enabled=r.removal_enabled,
        message=r.message,
        request_id=r.request_id,
        groups_skipped=r.groups_skipped,
        skipped_groups=[ts(t) for t in r.skipped_timestamps],
    )


def leader_pb(info: LeaderInfo) -> pb.GetLeaderResponse:
    reply = pb.GetLeaderResponse(
        leader_id=info.leader_id,
        leader_address=info.leader_address,
        epoch=info.epoch,
        is_self=info.is_self,
    )
    if info.elected_ms is not None:
        reply.elected_at.CopyFrom(ts(info.elected_ms))
    if info.expires_ms is not None:
        reply.lease_expires_at.CopyFrom(ts(info.expires_ms))
    return reply


def full_view(request: pb.GetStatusRequest) -> bool:
    """True for STATUS_VIEW_FULL; UNSPECIFIED and BASIC are the constant-size view."""
    if request.view == pb.STATUS_VIEW_FULL:
        return True
    if request.view in (pb.STATUS_VIEW_UNSPECIFIED, pb.STATUS_VIEW_BASIC):
        return False
    raise InvalidArgument(
        f"view {request.view} is not a StatusView (STATUS_VIEW_BASIC or STATUS_VIEW_FULL)",
        field="view",
    )


def summary_pb(s: CycleSummary) -> pb.StatusSummary:
    return pb.StatusSummary(
        series_count=s.series_count,
        states=[pb.SeriesStateCount(state=state_pb(st), count=n) for st, n in s.states],
        open_gaps=s.open_gaps,
        min_quality=s.min_quality,
        median_quality=s.median_quality,
        worst_series=[score_pb(w) for w in s.worst],
        gap_states=[pb.GapStateCount(state=_GAP_STATE_PB[st], count=n) for st, n in s.gap_states],
    )


def status_pb(s: Status) -> pb.GetStatusResponse:
    reply = pb.GetStatusResponse(
        replica_id=s.replica_id,
        role=_ROLES[s.role],
        auditor_enabled=s.auditor_enabled,
        series_count=s.series_count,
        version=s.version,
        database_reachable=s.database_reachable,
        leader_id=s.leader_id,
        epoch=s.epoch,
    )
    if s.last_cycle is not None:
        reply.last_cycle.CopyFrom(cycle_pb(s.last_cycle))
    # The configured series as served now; a replica that could not read the
    # scores falls back to what the last cycle found.
    summary = s.summary or (s.last_cycle.summary if s.last_cycle is not None else None)
    if summary is not None:
        reply.summary.CopyFrom(summary_pb(summary))
    if s.next_cycle_ms is not None:
        reply.next_cycle_at.CopyFrom(ts(s.next_cycle_ms))
    return reply
