"""Unit tests for the FROZEN_FEED rule (auditsvc.domain.frozen_feed)."""

from __future__ import annotations

import math

from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.frozen_feed import FrozenFeedDetector, detect_frozen
from auditsvc.domain.timeframes import parse_timeframe

M = 60_000
T0 = 1_704_067_200_000
ONE_MIN = parse_timeframe("1m")
K = AnomalyConfig().frozen_min_run


def same(i: int, volume: float = 0.0, price: float = 100.0) -> Candle:
    return Candle(T0 + i * M, price, price, price, price, volume)


def frozen(candles: list[Candle], tf: str = "1m") -> list[int]:
    return [a.open_time_ms for a in detect_frozen(candles, parse_timeframe(tf))]


class TestRunLength:
    """A run is reported from its K-th candle on, one finding per frozen candle."""

    def test_zero_volume_boundary(self) -> None:
        """K - 1 identical zero-volume candles pass; the K-th reports all K."""
        assert frozen([same(i) for i in range(K - 1)]) == []
        assert frozen([same(i) for i in range(K)]) == [T0 + i * M for i in range(K)]

    def test_run_extends_one_by_one(self) -> None:
        """Each candle after the K-th is reported as it arrives."""
        det = FrozenFeedDetector(ONE_MIN)
        counts = [len(det.push(same(i))) for i in range(K + 3)]
        assert counts == [0] * (K - 1) + [K, 1, 1, 1]

    def test_repeated_volume_spares_the_original(self) -> None:
        """K identical candles with the same non-zero volume: the K - 1 copies are reported."""
        found = detect_frozen([same(i, volume=1.5) for i in range(K)], ONE_MIN)
        assert [a.open_time_ms for a in found] == [T0 + i * M for i in range(1, K)]
        assert {(a.rule, a.observed) for a in found} == {(AnomalyRule.FROZEN_FEED, 1.5)}

    def test_smaller_setting(self) -> None:
        """frozen_min_run is honoured."""
        config = AnomalyConfig(frozen_min_run=3)
        found = detect_frozen([same(i) for i in range(3)], ONE_MIN, config)
        assert len(found) == 3


class TestNotFrozen:
    """Flat candles of an illiquid market, and anything that changes, are not a frozen feed."""

    def test_flat_with_varying_volume(self) -> None:
        """A thousand flat candles whose volume varies are never flagged."""
        assert frozen([same(i, volume=1.0 + (i % 7) / 10) for i in range(1000)]) == []

    def test_any_change_breaks_the_run(self) -> None:
        """A price change, a volume change, a gap or an invalid candle restarts the count."""
        half = K // 2 + 1
        for breaker in (
            same(half, price=100.01),
            same(half, volume=0.5),
            Candle(T0 + half * M, math.nan, 1.0, 1.0, 1.0, 0.0),
        ):
            run = [same(i) for i in range(half)] + [breaker]
            run += [same(i) for i in range(half + 1, 2 * half)]
            assert frozen(run) == []
        with_gap = [same(i) for i in range(half)] + [same(i) for i in range(half + 1, 2 * half)]
        assert frozen(with_gap) == []

    def test_zero_then_repeated_volume_are_different_runs(self) -> None:
        """The volume is part of what repeats: zero then 1.0 is two short runs."""
        run = [same(i) for i in range(K - 1)] + [same(i, volume=1.0) for i in range(K - 1, K + 5)]
        assert frozen(run) == []

    def test_reread_is_ignored(self) -> None:
        """A slot pushed twice does not lengthen the run."""
        det = FrozenFeedDetector(ONE_MIN)
        out = []
        for i in range(K - 1):
            out += det.push(same(i))
            out += det.push(same(i))
        assert out == []


class TestCalendar:
    """Runs follow the calendar grid of 1M."""

    def test_monthly_run(self) -> None:
        """K identical monthly candles name each month's open time."""
        tf = parse_timeframe("1M")
        opens = [T0]
        for _ in range(K - 1):
            opens.append(tf.next_open(opens[-1]))
        candles = [Candle(t, 5.0, 5.0, 5.0, 5.0, 0.0) for t in opens]
        assert frozen(candles, "1M") == opens
