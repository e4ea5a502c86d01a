"""The cycle summary behind GetStatus's BASIC view."""

from __future__ import annotations

import random

from auditsvc.domain.records import ScoreRecord, SeriesReport
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.summary import WORST_SERIES, summarize
from auditsvc.domain.values import HealthScore


def report(symbol: str, quality: float, gaps: int, state: SeriesState | None) -> SeriesReport:
    health = HealthScore(quality, quality, 100.0, 100.0, gaps, 0)
    record = ScoreRecord(symbol, "1m", health, 0, "c-1", state=state)
    return SeriesReport(symbol, "1m", 0, 60_000, 1, 1, 0, gaps, 0, 0, 0, 0, 0, record)


class TestSummarize:
    """Counts, quality figures and the worst series, whatever the number of series."""

    def test_counts_and_quality(self) -> None:
        """States are counted, gaps summed, min and median taken over every series."""
        reports = [
            report("A", 50.0, 3, SeriesState.LATE),
            report("B", 100.0, 0, SeriesState.LIVE),
            report("C", 90.0, 1, SeriesState.LIVE),
            report("D", 0.0, 1, None),
        ]
        s = summarize(reports)
        assert s.series_count == 4
        assert dict(s.states) == {None: 1, SeriesState.LATE: 1, SeriesState.LIVE: 2}
        assert s.open_gaps == 5
        assert s.min_quality == 0.0
        assert s.median_quality == 70.0
        assert [w.symbol for w in s.worst] == ["D", "A", "C", "B"]

    def test_constant_size_and_order_free(self) -> None:
        """Thousands of series give at most WORST_SERIES worst scores, in any input order."""
        reports = [report(f"S{i:05d}", float(i % 97), i % 3, SeriesState.LIVE) for i in range(5000)]
        s = summarize(reports)
        shuffled = list(reports)
        random.Random(7).shuffle(shuffled)
        assert summarize(shuffled) == s
        assert len(s.worst) == WORST_SERIES
        assert all(w.score.quality == 0.0 for w in s.worst)
        assert len(s.states) == 1

    def test_empty(self) -> None:
        """A cycle with no series has zero figures, not an error."""
        s = summarize([])
        assert (s.series_count, s.open_gaps, s.min_quality, s.median_quality) == (0, 0, 0.0, 0.0)
        assert s.worst == ()
