"""Unit tests for the cross-timeframe rule (auditsvc.domain.aggregates)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from auditsvc.domain.aggregates import (
    AggregateStatus,
    aggregate,
    check_aggregate,
    child_opens,
    child_timeframe,
)
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import parse_timeframe as tf

DAY = 86_400_000
MONDAY = 1_704_067_200_000  # 2024-01-01T00:00Z
FEB = 1_706_745_600_000  # 2024-02-01T00:00Z (a leap February: 29 days)
S = AggregateStatus


def days(start: int, n: int) -> list[Candle]:
    """n daily candles rising by 1 a day, each with volume 0.1 (not exact in binary)."""
    return [
        Candle(start + i * DAY, 100.0 + i, 101.5 + i, 99.5 + i, 101.0 + i, 0.1) for i in range(n)
    ]


def parent(children: list[Candle], open_ms: int, **changes: object) -> Candle:
    agg = dataclasses.replace(aggregate(children, open_ms), trade_count=None)
    return dataclasses.replace(agg, **changes)  # type: ignore[arg-type]


class TestChildTimeframe:
    """The nearest smaller configured timeframe that tiles the higher one."""

    ALL = [tf(n) for n in ("1m", "3m", "5m", "1h", "1d", "3d", "1w", "1M")]

    @pytest.mark.parametrize(
        "higher,child",
        [("5m", "1m"), ("1h", "5m"), ("1d", "1h"), ("3d", "1d"), ("1w", "1d"), ("1M", "1d")],
    )
    def test_nearest(self, higher: str, child: str) -> None:
        """Each higher timeframe gets its largest configured divisor."""
        assert child_timeframe(tf(higher), self.ALL) == tf(child)

    def test_sparse_configuration(self) -> None:
        """With only 1m and 1h, 1h aggregates 1m; 3m never tiles 5m."""
        assert child_timeframe(tf("1h"), [tf("1m"), tf("1h")]) == tf("1m")
        assert child_timeframe(tf("5m"), [tf("3m"), tf("5m")]) is None

    def test_week_and_month_do_not_nest(self) -> None:
        """1w never tiles 1M and 3d never tiles 1w."""
        assert child_timeframe(tf("1M"), [tf("1w"), tf("3d")]) is None
        assert child_timeframe(tf("1w"), [tf("3d")]) is None
        assert child_timeframe(tf("1m"), self.ALL) is None

    def test_children_of_a_month(self) -> None:
        """February 2024 has 29 daily children; the week starting Monday has 7."""
        assert len(child_opens(tf("1M"), tf("1d"), FEB)) == 29
        assert child_opens(tf("1w"), tf("1d"), MONDAY) == [MONDAY + i * DAY for i in range(7)]


class TestWeekAndMonth:
    """Calendar aggregates match, and a difference names the field and both values."""

    def test_week_consistent(self) -> None:
        """A week equal to its seven days is consistent, volume summed exactly (0.7)."""
        kids = days(MONDAY, 7)
        result = check_aggregate(tf("1w"), parent(kids, MONDAY), tf("1d"), kids)
        assert result.status is S.CONSISTENT and result.finding is None

    def test_week_from_sunday_is_not_the_week(self) -> None:
        """Days from Sunday to Saturday are not the children of the Monday week."""
        kids = days(MONDAY - DAY, 7)
        result = check_aggregate(tf("1w"), parent(kids, MONDAY), tf("1d"), kids)
        assert result.status is S.INCOMPLETE

    def test_month_consistent_and_mismatch(self) -> None:
        """February is its 29 days; a close taken from day 28 is a close mismatch."""
        kids = days(FEB, 29)
        good = parent(kids, FEB)
        assert check_aggregate(tf("1M"), good, tf("1d"), kids).status is S.CONSISTENT
        bad = dataclasses.replace(good, close=kids[27].close)
        result = check_aggregate(tf("1M"), bad, tf("1d"), kids)
        assert result.status is S.MISMATCH and result.finding is not None
        f = result.finding
        assert (f.rule, f.open_time_ms, f.field) == (AnomalyRule.AGGREGATE_MISMATCH, FEB, "close")
        assert (f.observed, f.expected) == (128.0, 129.0)

    def test_month_missing_a_day_is_incomplete(self) -> None:
        """Any missing child makes the result incomplete, never a mismatch."""
        kids = days(FEB, 29)
        bad = parent(kids, FEB, volume=99.0)
        result = check_aggregate(tf("1M"), bad, tf("1d"), kids[:14] + kids[15:])
        assert (result.status, result.finding) == (S.INCOMPLETE, None)

    def test_every_differing_field_is_listed(self) -> None:
        """The finding names the first differing field; the detail lists all of them."""
        kids = days(MONDAY, 7)
        bad = parent(kids, MONDAY, high=200.0, volume=1.0)
        result = check_aggregate(tf("1w"), bad, tf("1d"), kids)
        assert result.finding is not None and result.finding.field == "high"
        assert "high 200.0" in result.finding.detail and "volume 1.0" in result.finding.detail


class TestTolerances:
    """Prices agree to price_rel_tol, volumes to volume_rel_tol."""

    def test_price_tolerance_edge(self) -> None:
        """A high off by 0.5e-9 relative agrees; off by 2e-9 it does not."""
        kids = days(MONDAY, 7)
        top = max(k.high for k in kids if k.high is not None)
        near = parent(kids, MONDAY, high=top * (1 + 0.5e-9))
        far = parent(kids, MONDAY, high=top * (1 + 2e-9))
        assert check_aggregate(tf("1w"), near, tf("1d"), kids).status is S.CONSISTENT
        assert check_aggregate(tf("1w"), far, tf("1d"), kids).status is S.MISMATCH

    def test_volume_tolerance_edge(self) -> None:
        """A volume within volume_rel_tol agrees; beyond it is a mismatch."""
        kids = days(MONDAY, 7)
        config = AnomalyConfig(volume_rel_tol=1e-3)
        inside = parent(kids, MONDAY, volume=0.7 * (1 + 0.9e-3))
        outside = parent(kids, MONDAY, volume=0.7 * (1 + 1.1e-3))
        assert check_aggregate(tf("1w"), inside, tf("1d"), kids, config).status is S.CONSISTENT
        result = check_aggregate(tf("1w"), outside, tf("1d"), kids, config)
        assert result.finding is not None and result.finding.field == "volume"

    def test_float_sum_order_does_not_matter(self) -> None:
        """The aggregate volume is an exact (fsum) sum, whatever the children's order."""
        volumes = [1e16, 1.0, 0.0, 1.0, 3.0, 0.1, 0.2]
        week = days(MONDAY, 7)
        kids = [dataclasses.replace(k, volume=v) for k, v in zip(week, volumes, strict=True)]
        backwards = zip(week, volumes[::-1], strict=True)
        reordered = [dataclasses.replace(k, volume=v) for k, v in backwards]
        assert aggregate(kids).volume == aggregate(reordered).volume == math.fsum(volumes)

    def test_volume_sum_beyond_the_largest_float(self) -> None:
        """Children whose volumes overflow a float sum mismatch any stored volume."""
        kids = [dataclasses.replace(k, volume=1e308) for k in days(MONDAY, 7)]
        week = parent(days(MONDAY, 7), MONDAY, volume=1e308)
        result = check_aggregate(tf("1w"), week, tf("1d"), kids)
        assert result.finding is not None and result.finding.expected == math.inf


class TestIncomplete:
    """Whatever cannot prove a mismatch is incomplete."""

    def test_repeated_child(self) -> None:
        """Two candles in one child slot: incomplete."""
        kids = days(MONDAY, 7)
        result = check_aggregate(tf("1w"), parent(kids, MONDAY), tf("1d"), [*kids, kids[3]])
        assert result.status is S.INCOMPLETE and "repeated" in result.reason

    def test_invalid_child_or_parent(self) -> None:
        """A child or parent with an invalid value is left to its own rule."""
        kids = days(MONDAY, 7)
        broken = [*kids[:3], dataclasses.replace(kids[3], high=math.nan), *kids[4:]]
        assert check_aggregate(tf("1w"), parent(kids, MONDAY), tf("1d"), broken).status is (
            S.INCOMPLETE
        )
        bad_parent = parent(kids, MONDAY, volume=-1.0)
        assert check_aggregate(tf("1w"), bad_parent, tf("1d"), kids).status is S.INCOMPLETE

    def test_children_outside_are_ignored(self) -> None:
        """Candles of the neighbouring weeks do not take part."""
        kids = days(MONDAY - 7 * DAY, 21)
        week = kids[7:14]
        result = check_aggregate(tf("1w"), parent(week, MONDAY), tf("1d"), kids)
        assert result.status is S.CONSISTENT

    def test_non_tiling_pair_is_refused(self) -> None:
        """Asking 1w of 3d is a programming error."""
        kids = days(MONDAY, 7)
        with pytest.raises(ValueError):
            check_aggregate(tf("1w"), parent(kids, MONDAY), tf("3d"), kids)
