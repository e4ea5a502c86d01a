"""A cycle's summary: counts, quality figures and the worst series, in constant size.

Guarantees: the result's size does not grow with the number of series (at most
``worst`` scores and one count per state); the order of ``reports`` does not
matter (ties in quality are broken by symbol, then timeframe). Cost is
O(n log n) in the number of reports, once per cycle.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from auditsvc.domain.records import CycleSummary, SeriesReport

WORST_SERIES = 10


def summarize(reports: Sequence[SeriesReport], worst: int = WORST_SERIES) -> CycleSummary:
    """The summary of one cycle's series reports."""
    qualities = [r.health.score.quality for r in reports]
    states = Counter(r.health.state for r in reports)
    ranked = sorted(reports, key=lambda r: (r.health.score.quality, r.symbol, r.timeframe))
    return CycleSummary(
        series_count=len(reports),
        # Stable order: unknown first, then by state name.
        states=tuple(sorted(states.items(), key=lambda kv: "" if kv[0] is None else kv[0].value)),
        open_gaps=sum(r.gap_count for r in reports),
        min_quality=min(qualities, default=0.0),
        median_quality=statistics.median(qualities) if qualities else 0.0,
        worst=tuple(r.health for r in ranked[:worst]),
    )
