"""Unit tests for auditsvc.domain.scoring."""

from __future__ import annotations

import calendar

import pytest

from auditsvc.domain.scanner import scan
from auditsvc.domain.scoring import score
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.values import DuplicateSlot, Gap, HealthScore, SeriesScan, Window

M = 60_000
T0 = 1_704_067_200_000
WINDOW = Window(T0, T0 + 10 * M)
ONE_MIN = parse_timeframe("1m")


def make(present: int, gaps: int, dups: int, newest: int | None, expected: int = 10) -> SeriesScan:
    return SeriesScan(
        window=WINDOW,
        expected_candles=expected,
        present_candles=present,
        gaps=tuple(Gap(T0, T0 + M, 1) for _ in range(gaps)),
        duplicates=tuple(DuplicateSlot(T0, 2) for _ in range(dups)),
        misaligned_candles=0,
        newest_ms=newest,
    )


def approx(h: HealthScore, quality: float, comp: float, cons: float, fresh: float) -> None:
    assert h.quality == pytest.approx(quality, abs=1e-9)
    assert h.completeness == pytest.approx(comp, abs=1e-9)
    assert h.consistency == pytest.approx(cons, abs=1e-9)
    assert h.freshness == pytest.approx(fresh, abs=1e-9)


class TestFormulas:
    """Each component matches its hand-computed value."""

    def test_typical(self) -> None:
        """7/10 present, 2 gaps, 1 dup group, 2 slots behind: 70, 75, 60, quality 70."""
        h = score(make(7, 2, 1, T0 + 7 * M), ONE_MIN)
        approx(h, 70.0, 70.0, 75.0, 60.0)
        assert (h.gap_count, h.duplicate_groups) == (2, 1)

    def test_penalty_caps(self) -> None:
        """Gap penalty caps at 50 and duplicate penalty at 30, leaving consistency 20."""
        h = score(make(10, 7, 8, T0 + 9 * M), ONE_MIN)
        approx(h, 0.4 * 100 + 0.4 * 20 + 0.2 * 100, 100.0, 20.0, 100.0)

    def test_empty_series(self) -> None:
        """No documents: completeness 0, one gap gives 90, freshness 0, quality 36."""
        h = score(make(0, 1, 0, None), ONE_MIN)
        approx(h, 36.0, 0.0, 90.0, 0.0)

    def test_stale_and_future(self) -> None:
        """Five slots behind scores freshness 0; a newest past the last slot scores 100."""
        assert score(make(5, 0, 0, T0 + 4 * M), ONE_MIN).freshness == 0.0
        assert score(make(5, 0, 0, T0 + 5 * M), ONE_MIN).freshness == pytest.approx(20.0)
        assert score(make(5, 0, 0, T0 + 20 * M), ONE_MIN).freshness == 100.0

    def test_nothing_expected(self) -> None:
        """An empty window is complete; freshness is 0 without and 100 with a newest."""
        approx(score(make(0, 0, 0, None, expected=0), ONE_MIN), 80.0, 100.0, 100.0, 0.0)
        approx(score(make(0, 0, 0, T0, expected=0), ONE_MIN), 100.0, 100.0, 100.0, 100.0)


class TestFromScans:
    """Scores computed from real scans, including calendar months."""

    def test_month_freshness_uses_nominal(self) -> None:
        """On 1M, trailing the last open by 29 days gives 100 * (1 - 29/150)."""
        tf = parse_timeframe("1M")

        def ms(y: int, mo: int) -> int:
            return calendar.timegm((y, mo, 1, 0, 0, 0, 0, 0, 0)) * 1000

        result = scan(tf, Window(ms(2024, 1), ms(2024, 4)), [ms(2024, 1), ms(2024, 2)])
        h = score(result, tf)
        approx(
            h,
            0.4 * 200 / 3 + 0.4 * 90 + 0.2 * (100 - 2900 / 150),
            200 / 3,
            90.0,
            100 - 2900 / 150,
        )

    def test_unaligned_window_end(self) -> None:
        """Freshness measures lag from the last expected open, not from window.end."""
        result = scan(ONE_MIN, Window(T0, T0 + 3 * M + 1), [T0, T0 + 3 * M])
        h = score(result, ONE_MIN)
        approx(h, 0.4 * 50 + 0.4 * 90 + 0.2 * 100, 50.0, 90.0, 100.0)
