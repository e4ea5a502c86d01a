"""A gap's lifecycle and its backfill requests' outcomes: pure rules, no I/O.

States: OPEN (missing, no live request), BACKFILL_REQUESTED (a live request is
out), FILLED (a cycle found its slots present), UNFILLABLE (BACKFILL_MAX_ATTEMPTS
requests expired or were closed without filling it: no more requests) and
ACKNOWLEDGED (inside an operator's acknowledged window).

Rules kept here:
- A request is *live* while ``open`` is true; only live requests count against
  MAX_AUTO_BACKFILL_JOBS. The service closes a request itself with status
  ``filled`` when it sees the gap filled, ``expired`` when the gap has not shrunk
  within BACKFILL_TIMEOUT.
- After an unsuccessful request the gap waits ``backoff_s``: BACKFILL_TIMEOUT,
  doubling per attempt, capped at MAX_BACKOFF_S.
- When more gaps qualify than the cap allows, the worst go first: severity,
  then length (missing candles), then recency (the newest start).

Limits: the rules know nothing of time zones or exchange calendars; a gap that
cannot ever be filled becomes UNFILLABLE only after its attempts, unless an
operator acknowledges it first.
"""

from __future__ import annotations

import enum

from auditsvc.domain.values import Severity


class GapState(enum.Enum):
    OPEN = "open"
    BACKFILL_REQUESTED = "backfill_requested"
    FILLED = "filled"
    UNFILLABLE = "unfillable"
    ACKNOWLEDGED = "acknowledged"


# Still missing: a cycle that finds the gap again keeps its state.
MISSING = (GapState.OPEN, GapState.BACKFILL_REQUESTED, GapState.UNFILLABLE, GapState.ACKNOWLEDGED)
# What ListGaps returns when no state is asked for (its answer before states existed).
DEFAULT_LISTED = (GapState.OPEN, GapState.BACKFILL_REQUESTED)
# Kept for GAP_HISTORY_RETENTION once in these states (TTL-indexed).
HISTORY = (GapState.FILLED, GapState.UNFILLABLE, GapState.ACKNOWLEDGED)

# Request statuses the service writes; a writer may write any other with open: false.
PENDING = "pending"
FILLED = "filled"
EXPIRED = "expired"

# No gap waits longer than this between two requests.
MAX_BACKOFF_S = 24 * 3600


def backoff_s(timeout_s: int, attempts: int) -> int:
    """Seconds a gap waits after its ``attempts``-th unsuccessful request:
    ``timeout_s`` doubled per attempt after the first, at most MAX_BACKOFF_S."""
    if attempts < 1:
        return 0
    # Past 2**20 the cap has long been reached: never build a huge integer.
    return int(min(timeout_s * 2 ** min(attempts - 1, 20), MAX_BACKOFF_S))


def severity_rank(severity: Severity) -> int:
    """Lower is worse: the order in which gaps get requests under the cap."""
    return 0 if severity is Severity.HIGH else 1


def priority(severity: Severity) -> int:
    """The request document's ``priority`` for writers (1 first, as before states)."""
    return 1 if severity is Severity.HIGH else 5


def after_failure(attempts: int, max_attempts: int) -> GapState:
    """The state of a still-missing gap whose latest request ended without filling it."""
    return GapState.UNFILLABLE if attempts >= max_attempts else GapState.OPEN
