"""Frozen domain records shared by the audit logic, the service and the stores.

All instants are ``int`` milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

HIGH_SEVERITY_MS = 3_600_000


class Severity(enum.Enum):
    MEDIUM = "medium"
    HIGH = "high"


class Strategy(enum.Enum):
    KEEP_NEWEST = "keep_newest"
    KEEP_OLDEST = "keep_oldest"
    MANUAL = "manual"


class Role(enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"
    STANDALONE = "standalone"


@dataclass(frozen=True, slots=True)
class Window:
    """Half-open audit window ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Gap:
    """A maximal run of expected slots with no document.

    ``end_ms`` is the open time just after the last missing slot.
    """

    start_ms: int
    end_ms: int
    missing_candles: int

    @property
    def severity(self) -> Severity:
        return Severity.HIGH if self.end_ms - self.start_ms > HIGH_SEVERITY_MS else Severity.MEDIUM


@dataclass(frozen=True, slots=True)
class DuplicateSlot:
    """An expected slot holding more than one document."""

    timestamp_ms: int
    count: int

    @property
    def surplus(self) -> int:
        return self.count - 1


@dataclass(frozen=True, slots=True)
class HealthScore:
    quality: float
    completeness: float
    consistency: float
    freshness: float
    gap_count: int
    duplicate_groups: int


@dataclass(frozen=True, slots=True)
class SeriesScan:
    """What one pass over a series' sorted timestamps found."""

    window: Window
    expected_candles: int
    present_candles: int
    gaps: tuple[Gap, ...]
    duplicates: tuple[DuplicateSlot, ...]
    misaligned_candles: int
    newest_ms: int | None
    # Gaps found but not held (older than the newest ``max_gaps``); see SeriesScanner.
    dropped_gaps: int = 0
    # The misaligned timestamps, when few enough were seen to keep them (else None).
    # Not compared: a scan is its counts and runs; positions serve incremental audits.
    misaligned_at: tuple[int, ...] | None = field(default=(), compare=False)

    @property
    def gap_count(self) -> int:
        """Every gap found, held or not."""
        return len(self.gaps) + self.dropped_gaps

    @property
    def missing_candles(self) -> int:
        return self.expected_candles - self.present_candles

    @property
    def surplus_documents(self) -> int:
        return sum(d.surplus for d in self.duplicates)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    symbol: str
    timeframe: str


@dataclass(frozen=True, slots=True)
class CandleRef:
    """One document of a duplicate group, as the removal strategy sees it."""

    doc_id: object
    timestamp_ms: int
    # Value of DUPLICATE_VERSION_FIELD when configured and present.
    version: object | None = None
    # Opaque token of the document as grouped (its version, else its content): a
    # removal deletes the copy only while a re-read gives the same token.
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The decision for one duplicate group."""

    timestamp_ms: int
    kept: CandleRef
    removed: tuple[CandleRef, ...] = field(default_factory=tuple)
