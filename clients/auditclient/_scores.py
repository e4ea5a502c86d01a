"""Health scores: keep a stream monotonic per series, and say how old a verdict is.

Guarantees:

* :meth:`LatestScores.admit` never accepts a score older than one already accepted for
  the same (symbol, timeframe): older means an earlier ``computed_at`` (the cycle's
  fields), or an earlier ``verdict_time`` when both scores carry one (the live
  fields). Of scores with the same stamps it accepts one only when its state differs,
  so a snapshot replayed after a reconnect yields nothing new, while the server's move
  to UNKNOWN, which keeps the last confirmation as ``verdict_time``, is never dropped.
* :func:`verdict_age` is the local clock minus ``verdict_time``, or None when the score
  has none (a server that predates verdict ages, or UNKNOWN with no confirmation ever).

Limits: the age compares the server's database clock with the local clock, so it is
off by their skew; it is negative when the database clock runs ahead.
"""

from __future__ import annotations

from datetime import UTC, datetime

from auditpb.v1 import audit_pb2

_Stamp = tuple[int, int]


def _stamp(score: audit_pb2.HealthScore, field: str) -> _Stamp | None:
    if not score.HasField(field):
        return None
    value = getattr(score, field)
    return (int(value.seconds), int(value.nanos))


class LatestScores:
    """The stamps and state of the newest accepted score of each (symbol, timeframe)."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[_Stamp, _Stamp | None, int]] = {}

    def admit(self, score: audit_pb2.HealthScore) -> bool:
        """Record and return True if ``score`` is news for its series (see the module)."""
        key = (str(score.symbol), str(score.timeframe))
        computed = _stamp(score, "computed_at") or (0, 0)
        verdict = _stamp(score, "verdict_time")
        current = (computed, verdict, int(score.state))
        previous = self._latest.get(key)
        if previous is not None:
            old_computed, old_verdict, old_state = previous
            if computed < old_computed:
                return False
            if verdict is not None and old_verdict is not None and verdict < old_verdict:
                return False
            if computed == old_computed and verdict == old_verdict and current[2] == old_state:
                return False
        self._latest[key] = current
        return True


def verdict_age(score: audit_pb2.HealthScore, now: datetime | None = None) -> float | None:
    """Seconds from ``score.verdict_time`` to ``now`` (default: the local clock, UTC).

    None when the score has no ``verdict_time``: nobody ever confirmed it, so a gate
    must treat it as never fresh.
    """
    if not score.HasField("verdict_time"):
        return None
    when = score.verdict_time.ToDatetime(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - when).total_seconds()
