"""The pure rules of a gap's lifecycle: backoff, attempts, priority."""

from __future__ import annotations

from auditsvc.domain.gap_lifecycle import (
    MAX_BACKOFF_S,
    GapState,
    after_failure,
    backoff_s,
    priority,
    severity_rank,
)
from auditsvc.domain.values import Severity


class TestBackoff:
    """The wait after each unsuccessful request."""

    def test_doubles_from_the_timeout(self) -> None:
        """BACKFILL_TIMEOUT after the first attempt, then twice as long per attempt."""
        assert [backoff_s(3600, n) for n in (1, 2, 3, 4)] == [3600, 7200, 14400, 28800]

    def test_capped_at_a_day(self) -> None:
        """No wait exceeds 24 h, however many attempts (no huge integers either)."""
        assert backoff_s(3600, 6) == MAX_BACKOFF_S == 86400
        assert backoff_s(3600, 10_000) == MAX_BACKOFF_S

    def test_no_attempt_no_wait(self) -> None:
        """A gap never requested may be requested at once."""
        assert backoff_s(3600, 0) == 0


class TestAttempts:
    """BACKFILL_MAX_ATTEMPTS unsuccessful requests make a gap UNFILLABLE."""

    def test_after_failure(self) -> None:
        """Below the limit the gap is OPEN again; at it, UNFILLABLE."""
        assert after_failure(2, 3) is GapState.OPEN
        assert after_failure(3, 3) is GapState.UNFILLABLE


class TestPriority:
    """HIGH gaps rank first, and keep the writers' priority numbers."""

    def test_rank_and_priority(self) -> None:
        """HIGH ranks before MEDIUM; writers see 1 and 5 as before."""
        assert severity_rank(Severity.HIGH) < severity_rank(Severity.MEDIUM)
        assert (priority(Severity.HIGH), priority(Severity.MEDIUM)) == (1, 5)
