"""Keep a health-score stream monotonic per series across reconnects.

Guarantee: :meth:`LatestScores.admit` accepts a score only when its ``computed_at`` is
strictly later than every score already accepted for the same (symbol, timeframe), so a
replayed snapshot after a reconnect yields neither older nor equal scores.
"""

from __future__ import annotations

from auditpb.v1 import audit_pb2


class LatestScores:
    """The newest accepted ``computed_at`` of each (symbol, timeframe) series."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[int, int]] = {}

    def admit(self, score: audit_pb2.HealthScore) -> bool:
        """Record and return True if ``score`` is newer than the series' last one."""
        key = (str(score.symbol), str(score.timeframe))
        stamp = (int(score.computed_at.seconds), int(score.computed_at.nanos))
        previous = self._latest.get(key)
        if previous is not None and stamp <= previous:
            return False
        self._latest[key] = stamp
        return True
