"""A cycle's summary: counts, quality figures and the worst series, in constant size.

Guarantees: the result's size does not grow with the number of series (at most
``worst`` scores and one count per state); the order of ``reports`` does not
matter (ties in quality are broken by symbol, then timeframe). Cost is
O(n log n) in the number of reports, once per cycle.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Sequence

from auditsvc.domain.records import CycleSummary, ScoreRecord, SeriesReport

WORST_SERIES = 10


def summarize(reports: Sequence[SeriesReport], worst: int = WORST_SERIES) -> CycleSummary:
    """The summary of one cycle's series reports."""
    summary = summarize_scores([r.health for r in reports], worst)
    return dataclasses.replace(summary, open_gaps=sum(r.gap_count for r in reports))


def summarize_scores(scores: Sequence[ScoreRecord], worst: int = WORST_SERIES) -> CycleSummary:
    """The summary of series scores (as served: their states are the verdicts);
    open gaps are the scores' gap counts."""
    qualities = [s.score.quality for s in scores]
    states = Counter(s.state for s in scores)
    ranked = sorted(scores, key=lambda s: (s.score.quality, s.symbol, s.timeframe))
    return CycleSummary(
        series_count=len(scores),
        # Stable order: unknown first, then by state name.
        states=tuple(sorted(states.items(), key=lambda kv: "" if kv[0] is None else kv[0].value)),
        open_gaps=sum(s.score.gap_count for s in scores),
        min_quality=min(qualities, default=0.0),
        median_quality=statistics.median(qualities) if qualities else 0.0,
        worst=tuple(ranked[:worst]),
    )
