"""Build auditsvc request messages from plain Python arguments.

Guarantees: datetimes must be timezone-aware and are stored as UTC Timestamps (a naive
datetime raises ``ValueError`` rather than being guessed at); ``None`` leaves a time
unset; mutating requests get a fresh uuid4 ``request_id`` unless the caller gave one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from auditpb.v1 import audit_pb2

StrategyLike = int | str | None
"""A ``Strategy`` enum value, a name such as ``"keep_newest"``, or ``None`` (server default)."""


def to_timestamp(value: datetime | None, name: str) -> datetime | None:
    """Check that ``value`` is aware and return it in UTC; ``None`` stays ``None``.

    The generated message constructors turn the UTC datetime into a Timestamp.
    """
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def strategy_value(strategy: StrategyLike) -> audit_pb2.Strategy:
    """Return the ``Strategy`` enum value for an enum value or a (short) name.

    ``"keep_newest"``, ``"KEEP-NEWEST"`` and ``"STRATEGY_KEEP_NEWEST"`` are all accepted;
    an unknown name or number raises ``ValueError``.
    """
    if strategy is None:
        return audit_pb2.STRATEGY_UNSPECIFIED
    return cast(
        "audit_pb2.Strategy", _enum_number(audit_pb2.Strategy, "STRATEGY_", strategy, "strategy")
    )


def new_request_id() -> str:
    """Return a fresh idempotency key (uuid4)."""
    return str(uuid.uuid4())


def run_audit_request(
    symbols: Iterable[str],
    timeframes: Iterable[str],
    start: datetime | None,
    end: datetime | None,
    request_id: str,
) -> audit_pb2.RunAuditRequest:
    """Build a RunAuditRequest."""
    return audit_pb2.RunAuditRequest(
        symbols=list(symbols),
        timeframes=list(timeframes),
        start_time=to_timestamp(start, "start"),
        end_time=to_timestamp(end, "end"),
        request_id=request_id,
    )


def list_gaps_request(
    symbol: str,
    timeframe: str,
    start: datetime | None,
    end: datetime | None,
    min_missing_candles: int,
    page_size: int,
    states: Iterable[GapStateLike] = (),
) -> audit_pb2.ListGapsRequest:
    """Build the first ListGapsRequest; later pages only change ``page_token``."""
    return audit_pb2.ListGapsRequest(
        symbol=symbol,
        timeframe=timeframe,
        start_time=to_timestamp(start, "start"),
        end_time=to_timestamp(end, "end"),
        min_missing_candles=min_missing_candles,
        page_size=page_size,
        states=[gap_state_value(s) for s in states],
    )


GapStateLike = int | str
"""A ``GapState`` enum value or a name such as ``"filled"`` or ``"GAP_STATE_FILLED"``."""


def gap_state_value(state: GapStateLike) -> audit_pb2.GapState:
    """Return the ``GapState`` enum value for an enum value or a (short) name; an unknown
    name or number raises ``ValueError``."""
    return cast(
        "audit_pb2.GapState", _enum_number(audit_pb2.GapState, "GAP_STATE_", state, "gap state")
    )


RuleLike = int | str
"""An ``AnomalyRule`` enum value or a name such as ``"price_spike"`` or
``"ANOMALY_RULE_PRICE_SPIKE"``."""


def rule_value(rule: RuleLike) -> audit_pb2.AnomalyRule:
    """Return the ``AnomalyRule`` enum value for an enum value or a (short) name; an
    unknown name or number raises ``ValueError``."""
    return cast(
        "audit_pb2.AnomalyRule",
        _enum_number(audit_pb2.AnomalyRule, "ANOMALY_RULE_", rule, "anomaly rule"),
    )


def _enum_number(enum: Any, prefix: str, value: int | str, what: str) -> int:
    """``value``'s number in ``enum``: a known number as it is, or the value of a name
    given with or without ``prefix``, in any case, with ``-`` for ``_``. An unknown
    name or number raises ValueError (a name's error names ``what``)."""
    if isinstance(value, int):
        enum.Name(value)  # raises ValueError on an unknown number
        return value
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    try:
        return int(enum.Value(name))
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}") from None


def list_anomalies_request(
    symbol: str,
    timeframe: str,
    rules: Iterable[RuleLike],
    start: datetime | None,
    end: datetime | None,
    page_size: int,
) -> audit_pb2.ListAnomaliesRequest:
    """Build the first ListAnomaliesRequest; later pages only change ``page_token``."""
    return audit_pb2.ListAnomaliesRequest(
        symbol=symbol,
        timeframe=timeframe,
        rules=[rule_value(r) for r in rules],
        start_time=to_timestamp(start, "start"),
        end_time=to_timestamp(end, "end"),
        page_size=page_size,
    )


def acknowledge_gaps_request(
    symbols: Iterable[str],
    timeframes: Iterable[str],
    start: datetime,
    end: datetime,
    reason: str,
    request_id: str,
) -> audit_pb2.AcknowledgeGapsRequest:
    """Build an AcknowledgeGapsRequest (both times required; they may lie in the future)."""
    return audit_pb2.AcknowledgeGapsRequest(
        symbols=list(symbols),
        timeframes=list(timeframes),
        start_time=to_timestamp(start, "start"),
        end_time=to_timestamp(end, "end"),
        reason=reason,
        request_id=request_id,
    )


def list_health_scores_request(
    symbols: Sequence[str],
    timeframes: Sequence[str],
    state: audit_pb2.SeriesState,
    page_size: int,
) -> audit_pb2.ListHealthScoresRequest:
    """Build the first ListHealthScoresRequest; later pages only change ``page_token``."""
    return audit_pb2.ListHealthScoresRequest(
        symbols=list(symbols), timeframes=list(timeframes), state=state, page_size=page_size
    )


def resolve_duplicates_request(
    symbol: str,
    timeframe: str,
    start: datetime | None,
    end: datetime | None,
    strategy: StrategyLike,
    dry_run: bool,
    request_id: str,
) -> audit_pb2.ResolveDuplicatesRequest:
    """Build a ResolveDuplicatesRequest."""
    return audit_pb2.ResolveDuplicatesRequest(
        symbol=symbol,
        timeframe=timeframe,
        start_time=to_timestamp(start, "start"),
        end_time=to_timestamp(end, "end"),
        strategy=strategy_value(strategy),
        dry_run=dry_run,
        request_id=request_id,
    )


def health_request(
    symbols: Iterable[str], timeframes: Iterable[str]
) -> audit_pb2.StreamHealthScoresRequest:
    """Build a StreamHealthScoresRequest."""
    return audit_pb2.StreamHealthScoresRequest(symbols=list(symbols), timeframes=list(timeframes))
