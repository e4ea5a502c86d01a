"""Health scores of one scanned series, each a float in [0, 100].

Exact formulas (clients and dashboards rely on them):

* completeness = 100 * present / expected (100.0 when nothing is expected)
* consistency = 100 - min(10 * gaps, 50) - min(5 * duplicate groups, 30)
* freshness = 100 * max(0, 1 - lag / (5 * nominal_ms)), where lag is how far
  the newest aligned document trails the last expected slot's open time (never
  negative). A series with no aligned document in the window scores 0.0; a
  window expecting no slot scores 100.0 when it somehow has a newest document.
* quality = 0.4 * completeness + 0.4 * consistency + 0.2 * freshness

``1M`` uses its 30-day nominal length for the freshness horizon.
"""

from __future__ import annotations

from auditsvc.domain.timeframes import Timeframe
from auditsvc.domain.values import HealthScore, SeriesScan

_GAP_PENALTY = 10
_GAP_PENALTY_CAP = 50
_DUP_PENALTY = 5
_DUP_PENALTY_CAP = 30
# Five slots behind is "stale": long enough to ride out an ingest hiccup.
_FRESHNESS_HORIZON_SLOTS = 5


def _freshness(scan: SeriesScan, tf: Timeframe) -> float:
    if scan.newest_ms is None:
        return 0.0
    if scan.expected_candles == 0:
        return 100.0
    last_open = tf.floor(scan.window.end_ms - 1)
    lag = max(0, last_open - scan.newest_ms)
    return 100.0 * max(0.0, 1.0 - lag / (_FRESHNESS_HORIZON_SLOTS * tf.nominal_ms))


def score(scan: SeriesScan, tf: Timeframe) -> HealthScore:
    """The :class:`HealthScore` of ``scan``, a scan of a ``tf`` series."""
    gap_count = scan.gap_count
    duplicate_groups = len(scan.duplicates)
    if scan.expected_candles == 0:
        completeness = 100.0
    else:
        completeness = 100.0 * scan.present_candles / scan.expected_candles
    consistency = float(
        100
        - min(gap_count * _GAP_PENALTY, _GAP_PENALTY_CAP)
        - min(duplicate_groups * _DUP_PENALTY, _DUP_PENALTY_CAP)
    )
    freshness = _freshness(scan, tf)
    return HealthScore(
        quality=0.4 * completeness + 0.4 * consistency + 0.2 * freshness,
        completeness=completeness,
        consistency=consistency,
        freshness=freshness,
        gap_count=gap_count,
        duplicate_groups=duplicate_groups,
    )
