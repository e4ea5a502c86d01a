import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_LEADER: _ClassVar[Role]
    ROLE_FOLLOWER: _ClassVar[Role]
    ROLE_STANDALONE: _ClassVar[Role]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_MEDIUM: _ClassVar[Severity]
    SEVERITY_HIGH: _ClassVar[Severity]

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_KEEP_NEWEST: _ClassVar[Strategy]
    STRATEGY_KEEP_OLDEST: _ClassVar[Strategy]
    STRATEGY_MANUAL: _ClassVar[Strategy]

class SeriesState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERIES_STATE_UNSPECIFIED: _ClassVar[SeriesState]
    SERIES_STATE_LIVE: _ClassVar[SeriesState]
    SERIES_STATE_LATE: _ClassVar[SeriesState]
    SERIES_STATE_NO_DATA: _ClassVar[SeriesState]
    SERIES_STATE_UNKNOWN: _ClassVar[SeriesState]

class AnomalyRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANOMALY_RULE_UNSPECIFIED: _ClassVar[AnomalyRule]
    ANOMALY_RULE_PRICE_INVALID: _ClassVar[AnomalyRule]
    ANOMALY_RULE_HIGH_BELOW_BODY: _ClassVar[AnomalyRule]
    ANOMALY_RULE_LOW_ABOVE_BODY: _ClassVar[AnomalyRule]
    ANOMALY_RULE_VOLUME_INVALID: _ClassVar[AnomalyRule]
    ANOMALY_RULE_TIME_MISALIGNED: _ClassVar[AnomalyRule]
    ANOMALY_RULE_TIME_IN_FUTURE: _ClassVar[AnomalyRule]
    ANOMALY_RULE_CLOSE_TIME_INVALID: _ClassVar[AnomalyRule]
    ANOMALY_RULE_TRADES_WITHOUT_VOLUME: _ClassVar[AnomalyRule]
    ANOMALY_RULE_TAKER_ABOVE_VOLUME: _ClassVar[AnomalyRule]
    ANOMALY_RULE_QUOTE_VOLUME_OUTSIDE_RANGE: _ClassVar[AnomalyRule]
    ANOMALY_RULE_PRICE_SPIKE: _ClassVar[AnomalyRule]
    ANOMALY_RULE_FROZEN_FEED: _ClassVar[AnomalyRule]
    ANOMALY_RULE_AGGREGATE_MISMATCH: _ClassVar[AnomalyRule]

class CycleStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CYCLE_STATUS_UNSPECIFIED: _ClassVar[CycleStatus]
    CYCLE_STATUS_SUCCEEDED: _ClassVar[CycleStatus]
    CYCLE_STATUS_FAILED: _ClassVar[CycleStatus]

class GapState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GAP_STATE_UNSPECIFIED: _ClassVar[GapState]
    GAP_STATE_OPEN: _ClassVar[GapState]
    GAP_STATE_BACKFILL_REQUESTED: _ClassVar[GapState]
    GAP_STATE_FILLED: _ClassVar[GapState]
    GAP_STATE_UNFILLABLE: _ClassVar[GapState]
    GAP_STATE_ACKNOWLEDGED: _ClassVar[GapState]

class StatusView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_VIEW_UNSPECIFIED: _ClassVar[StatusView]
    STATUS_VIEW_BASIC: _ClassVar[StatusView]
    STATUS_VIEW_FULL: _ClassVar[StatusView]
ROLE_UNSPECIFIED: Role
ROLE_LEADER: Role
ROLE_FOLLOWER: Role
ROLE_STANDALONE: Role
SEVERITY_UNSPECIFIED: Severity
SEVERITY_MEDIUM: Severity
SEVERITY_HIGH: Severity
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_KEEP_NEWEST: Strategy
STRATEGY_KEEP_OLDEST: Strategy
STRATEGY_MANUAL: Strategy
SERIES_STATE_UNSPECIFIED: SeriesState
SERIES_STATE_LIVE: SeriesState
SERIES_STATE_LATE: SeriesState
SERIES_STATE_NO_DATA: SeriesState
SERIES_STATE_UNKNOWN: SeriesState
ANOMALY_RULE_UNSPECIFIED: AnomalyRule
ANOMALY_RULE_PRICE_INVALID: AnomalyRule
ANOMALY_RULE_HIGH_BELOW_BODY: AnomalyRule
ANOMALY_RULE_LOW_ABOVE_BODY: AnomalyRule
ANOMALY_RULE_VOLUME_INVALID: AnomalyRule
ANOMALY_RULE_TIME_MISALIGNED: AnomalyRule
ANOMALY_RULE_TIME_IN_FUTURE: AnomalyRule
ANOMALY_RULE_CLOSE_TIME_INVALID: AnomalyRule
ANOMALY_RULE_TRADES_WITHOUT_VOLUME: AnomalyRule
ANOMALY_RULE_TAKER_ABOVE_VOLUME: AnomalyRule
ANOMALY_RULE_QUOTE_VOLUME_OUTSIDE_RANGE: AnomalyRule
ANOMALY_RULE_PRICE_SPIKE: AnomalyRule
ANOMALY_RULE_FROZEN_FEED: AnomalyRule
ANOMALY_RULE_AGGREGATE_MISMATCH: AnomalyRule
CYCLE_STATUS_UNSPECIFIED: CycleStatus
CYCLE_STATUS_SUCCEEDED: CycleStatus
CYCLE_STATUS_FAILED: CycleStatus
GAP_STATE_UNSPECIFIED: GapState
GAP_STATE_OPEN: GapState
GAP_STATE_BACKFILL_REQUESTED: GapState
GAP_STATE_FILLED: GapState
GAP_STATE_UNFILLABLE: GapState
GAP_STATE_ACKNOWLEDGED: GapState
STATUS_VIEW_UNSPECIFIED: StatusView
STATUS_VIEW_BASIC: StatusView
STATUS_VIEW_FULL: StatusView

class GetLeaderRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLeaderResponse(_message.Message):
    __slots__ = ("leader_id", "leader_address", "epoch", "is_self", "elected_at", "lease_expires_at")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    ELECTED_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    leader_id: str
    leader_address: str
    epoch: int
    is_self: bool
    elected_at: _timestamp_pb2.Timestamp
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., epoch: _Optional[int] = ..., is_self: _Optional[bool] = ..., elected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("view",)
    VIEW_FIELD_NUMBER: _ClassVar[int]
    view: StatusView
    def __init__(self, view: _Optional[_Union[StatusView, str]] = ...) -> None: ...

class SeriesStateCount(_message.Message):
    __slots__ = ("state", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: SeriesState
    count: int
    def __init__(self, state: _Optional[_Union[SeriesState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class StatusSummary(_message.Message):
    __slots__ = ("series_count", "states", "open_gaps", "min_quality", "median_quality", "worst_series", "gap_states")
    SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    OPEN_GAPS_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    WORST_SERIES_FIELD_NUMBER: _ClassVar[int]
    GAP_STATES_FIELD_NUMBER: _ClassVar[int]
    series_count: int
    states: _containers.RepeatedCompositeFieldContainer[SeriesStateCount]
    open_gaps: int
    min_quality: float
    median_quality: float
    worst_series: _containers.RepeatedCompositeFieldContainer[HealthScore]
    gap_states: _containers.RepeatedCompositeFieldContainer[GapStateCount]
    def __init__(self, series_count: _Optional[int] = ..., states: _Optional[_Iterable[_Union[SeriesStateCount, _Mapping]]] = ..., open_gaps: _Optional[int] = ..., min_quality: _Optional[float] = ..., median_quality: _Optional[float] = ..., worst_series: _Optional[_Iterable[_Union[HealthScore, _Mapping]]] = ..., gap_states: _Optional[_Iterable[_Union[GapStateCount, _Mapping]]] = ...) -> None: ...

class GapStateCount(_message.Message):
    __slots__ = ("state", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: GapState
    count: int
    def __init__(self, state: _Optional[_Union[GapState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("replica_id", "role", "auditor_enabled", "last_cycle", "next_cycle_at", "series_count", "version", "database_reachable", "leader_id", "epoch", "summary")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AUDITOR_ENABLED_FIELD_NUMBER: _ClassVar[int]
    LAST_CYCLE_FIELD_NUMBER: _ClassVar[int]
    NEXT_CYCLE_AT_FIELD_NUMBER: _ClassVar[int]
    SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATABASE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    role: Role
    auditor_enabled: bool
    last_cycle: AuditCycle
    next_cycle_at: _timestamp_pb2.Timestamp
    series_count: int
    version: str
    database_reachable: bool
    leader_id: str
    epoch: int
    summary: StatusSummary
    def __init__(self, replica_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., auditor_enabled: _Optional[bool] = ..., last_cycle: _Optional[_Union[AuditCycle, _Mapping]] = ..., next_cycle_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., series_count: _Optional[int] = ..., version: _Optional[str] = ..., database_reachable: _Optional[bool] = ..., leader_id: _Optional[str] = ..., epoch: _Optional[int] = ..., summary: _Optional[_Union[StatusSummary, _Mapping]] = ...) -> None: ...

class RunAuditRequest(_message.Message):
    __slots__ = ("symbols", "timeframes", "start_time", "end_time", "request_id")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAMES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    timeframes: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., timeframes: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RunAuditResponse(_message.Message):
    __slots__ = ("cycle",)
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    cycle: AuditCycle
    def __init__(self, cycle: _Optional[_Union[AuditCycle, _Mapping]] = ...) -> None: ...

class AuditCycle(_message.Message):
    __slots__ = ("cycle_id", "started_at", "finished_at", "served_by", "epoch", "series", "status", "error", "trigger", "historical")
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    HISTORICAL_FIELD_NUMBER: _ClassVar[int]
    cycle_id: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    served_by: str
    epoch: int
    series: _containers.RepeatedCompositeFieldContainer[SeriesReport]
    status: CycleStatus
    error: str
    trigger: str
    historical: bool
    def __init__(self, cycle_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., served_by: _Optional[str] = ..., epoch: _Optional[int] = ..., series: _Optional[_Iterable[_Union[SeriesReport, _Mapping]]] = ..., status: _Optional[_Union[CycleStatus, str]] = ..., error: _Optional[str] = ..., trigger: _Optional[str] = ..., historical: _Optional[bool] = ...) -> None: ...

class SeriesReport(_message.Message):
    __slots__ = ("symbol", "timeframe", "window_start", "window_end", "expected_candles", "present_candles", "missing_candles", "gap_count", "duplicate_groups", "surplus_documents", "misaligned_candles", "backfills_requested", "health", "backfills_skipped", "historical", "gaps_not_stored", "acknowledged_gap_count", "acknowledged_missing_candles")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CANDLES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_CANDLES_FIELD_NUMBER: _ClassVar[int]
    MISSING_CANDLES_FIELD_NUMBER: _ClassVar[int]
    GAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SURPLUS_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MISALIGNED_CANDLES_FIELD_NUMBER: _ClassVar[int]
    BACKFILLS_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    BACKFILLS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    HISTORICAL_FIELD_NUMBER: _ClassVar[int]
    GAPS_NOT_STORED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_GAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_MISSING_CANDLES_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    expected_candles: int
    present_candles: int
    missing_candles: int
    gap_count: int
    duplicate_groups: int
    surplus_documents: int
    misaligned_candles: int
    backfills_requested: int
    health: HealthScore
    backfills_skipped: int
    historical: bool
    gaps_not_stored: int
    acknowledged_gap_count: int
    acknowledged_missing_candles: int
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_candles: _Optional[int] = ..., present_candles: _Optional[int] = ..., missing_candles: _Optional[int] = ..., gap_count: _Optional[int] = ..., duplicate_groups: _Optional[int] = ..., surplus_documents: _Optional[int] = ..., misaligned_candles: _Optional[int] = ..., backfills_requested: _Optional[int] = ..., health: _Optional[_Union[HealthScore, _Mapping]] = ..., backfills_skipped: _Optional[int] = ..., historical: _Optional[bool] = ..., gaps_not_stored: _Optional[int] = ..., acknowledged_gap_count: _Optional[int] = ..., acknowledged_missing_candles: _Optional[int] = ...) -> None: ...

class HealthScore(_message.Message):
    __slots__ = ("symbol", "timeframe", "quality", "completeness", "consistency", "freshness", "gap_count", "duplicate_groups", "computed_at", "cycle_id", "state", "last_candle_open", "late_candles", "verdict_time", "anomaly_count", "suspect", "validity")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    GAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    CYCLE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_CANDLE_OPEN_FIELD_NUMBER: _ClassVar[int]
    LATE_CANDLES_FIELD_NUMBER: _ClassVar[int]
    VERDICT_TIME_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    quality: float
    completeness: float
    consistency: float
    freshness: float
    gap_count: int
    duplicate_groups: int
    computed_at: _timestamp_pb2.Timestamp
    cycle_id: str
    state: SeriesState
    last_candle_open: _timestamp_pb2.Timestamp
    late_candles: int
    verdict_time: _timestamp_pb2.Timestamp
    anomaly_count: int
    suspect: bool
    validity: float
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., quality: _Optional[float] = ..., completeness: _Optional[float] = ..., consistency: _Optional[float] = ..., freshness: _Optional[float] = ..., gap_count: _Optional[int] = ..., duplicate_groups: _Optional[int] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cycle_id: _Optional[str] = ..., state: _Optional[_Union[SeriesState, str]] = ..., last_candle_open: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., late_candles: _Optional[int] = ..., verdict_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., anomaly_count: _Optional[int] = ..., suspect: _Optional[bool] = ..., validity: _Optional[float] = ...) -> None: ...

class ListHealthScoresRequest(_message.Message):
    __slots__ = ("symbols", "timeframes", "state", "page_size", "page_token")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAMES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    timeframes: _containers.RepeatedScalarFieldContainer[str]
    state: SeriesState
    page_size: int
    page_token: str
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., timeframes: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[SeriesState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListHealthScoresResponse(_message.Message):
    __slots__ = ("scores", "next_page_token")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[HealthScore]
    next_page_token: str
    def __init__(self, scores: _Optional[_Iterable[_Union[HealthScore, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListGapsRequest(_message.Message):
    __slots__ = ("symbol", "timeframe", "start_time", "end_time", "min_missing_candles", "page_size", "page_token", "states")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    MIN_MISSING_CANDLES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    min_missing_candles: int
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[GapState]
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_missing_candles: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[GapState, str]]] = ...) -> None: ...

class ListGapsResponse(_message.Message):
    __slots__ = ("gaps", "next_page_token")
    GAPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    gaps: _containers.RepeatedCompositeFieldContainer[Gap]
    next_page_token: str
    def __init__(self, gaps: _Optional[_Iterable[_Union[Gap, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("symbol", "timeframe", "start_time", "end_time", "missing_candles", "severity", "backfill_request_id", "detected_at", "detected_live", "state", "filled_at", "attempts")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    MISSING_CANDLES_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    DETECTED_LIVE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FILLED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    missing_candles: int
    severity: Severity
    backfill_request_id: str
    detected_at: _timestamp_pb2.Timestamp
    detected_live: bool
    state: GapState
    filled_at: _timestamp_pb2.Timestamp
    attempts: int
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., missing_candles: _Optional[int] = ..., severity: _Optional[_Union[Severity, str]] = ..., backfill_request_id: _Optional[str] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detected_live: _Optional[bool] = ..., state: _Optional[_Union[GapState, str]] = ..., filled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class ResolveDuplicatesRequest(_message.Message):
    __slots__ = ("symbol", "timeframe", "start_time", "end_time", "strategy", "dry_run", "request_id")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    strategy: Strategy
    dry_run: bool
    request_id: str
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., dry_run: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ResolveDuplicatesResponse(_message.Message):
    __slots__ = ("duplicate_groups", "surplus_documents", "documents_removed", "documents_archived", "strategy", "dry_run", "served_by", "epoch", "groups", "removal_enabled", "message", "request_id", "groups_skipped", "skipped_groups")
    DUPLICATE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SURPLUS_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    REMOVAL_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    duplicate_groups: int
    surplus_documents: int
    documents_removed: int
    documents_archived: int
    strategy: Strategy
    dry_run: bool
    served_by: str
    epoch: int
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    removal_enabled: bool
    message: str
    request_id: str
    groups_skipped: int
    skipped_groups: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    def __init__(self, duplicate_groups: _Optional[int] = ..., surplus_documents: _Optional[int] = ..., documents_removed: _Optional[int] = ..., documents_archived: _Optional[int] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., dry_run: _Optional[bool] = ..., served_by: _Optional[str] = ..., epoch: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., removal_enabled: _Optional[bool] = ..., message: _Optional[str] = ..., request_id: _Optional[str] = ..., groups_skipped: _Optional[int] = ..., skipped_groups: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("timestamp", "kept_id", "removed_ids", "document_ids")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    KEPT_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_IDS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    kept_id: str
    removed_ids: _containers.RepeatedScalarFieldContainer[str]
    document_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kept_id: _Optional[str] = ..., removed_ids: _Optional[_Iterable[str]] = ..., document_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamHealthScoresRequest(_message.Message):
    __slots__ = ("symbols", "timeframes")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAMES_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    timeframes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., timeframes: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamHealthScoresResponse(_message.Message):
    __slots__ = ("score",)
    SCORE_FIELD_NUMBER: _ClassVar[int]
    score: HealthScore
    def __init__(self, score: _Optional[_Union[HealthScore, _Mapping]] = ...) -> None: ...

class AcknowledgeGapsRequest(_message.Message):
    __slots__ = ("symbols", "timeframes", "start_time", "end_time", "reason", "request_id")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAMES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    timeframes: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    reason: str
    request_id: str
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., timeframes: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AcknowledgeGapsResponse(_message.Message):
    __slots__ = ("acknowledgement",)
    ACKNOWLEDGEMENT_FIELD_NUMBER: _ClassVar[int]
    acknowledgement: Acknowledgement
    def __init__(self, acknowledgement: _Optional[_Union[Acknowledgement, _Mapping]] = ...) -> None: ...

class Acknowledgement(_message.Message):
    __slots__ = ("id", "symbols", "timeframes", "start_time", "end_time", "reason", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAMES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    timeframes: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    reason: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., timeframes: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAcknowledgementsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAcknowledgementsResponse(_message.Message):
    __slots__ = ("acknowledgements", "next_page_token")
    ACKNOWLEDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    acknowledgements: _containers.RepeatedCompositeFieldContainer[Acknowledgement]
    next_page_token: str
    def __init__(self, acknowledgements: _Optional[_Iterable[_Union[Acknowledgement, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAnomaliesRequest(_message.Message):
    __slots__ = ("symbol", "timeframe", "rules", "start_time", "end_time", "page_size", "page_token")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    rules: _containers.RepeatedScalarFieldContainer[AnomalyRule]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[AnomalyRule, str]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAnomaliesResponse(_message.Message):
    __slots__ = ("anomalies", "next_page_token")
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    anomalies: _containers.RepeatedCompositeFieldContainer[Anomaly]
    next_page_token: str
    def __init__(self, anomalies: _Optional[_Iterable[_Union[Anomaly, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Anomaly(_message.Message):
    __slots__ = ("symbol", "timeframe", "open_time", "rule", "detail", "field", "observed", "expected", "detected_at", "detected_live")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    DETECTED_LIVE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    timeframe: str
    open_time: _timestamp_pb2.Timestamp
    rule: AnomalyRule
    detail: str
    field: str
    observed: float
    expected: float
    detected_at: _timestamp_pb2.Timestamp
    detected_live: bool
    def __init__(self, symbol: _Optional[str] = ..., timeframe: _Optional[str] = ..., open_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rule: _Optional[_Union[AnomalyRule, str]] = ..., detail: _Optional[str] = ..., field: _Optional[str] = ..., observed: _Optional[float] = ..., expected: _Optional[float] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detected_live: _Optional[bool] = ...) -> None: ...

class DeleteAcknowledgementRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteAcknowledgementResponse(_message.Message):
    __slots__ = ("acknowledgement",)
    ACKNOWLEDGEMENT_FIELD_NUMBER: _ClassVar[int]
    acknowledgement: Acknowledgement
    def __init__(self, acknowledgement: _Optional[_Union[Acknowledgement, _Mapping]] = ...) -> None: ...
