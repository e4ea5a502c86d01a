"""Unit tests for the PRICE_SPIKE rule (auditsvc.domain.spikes)."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.spikes import SpikeDetector, detect_spikes
from auditsvc.domain.timeframes import parse_timeframe

M = 60_000
T0 = 1_704_067_200_000
ONE_MIN = parse_timeframe("1m")
# Alternating +-1 % closes: the median absolute move is ln(1.01), so with the default
# multiple the threshold is 20 * ln(1.01) ~ 0.199, above the 10 % floor.
STEP = math.log(1.01)


def bar(i: int, close: float, high: float | None = None, low: float | None = None) -> Candle:
    hi = close if high is None else high
    lo = close if low is None else low
    return Candle(T0 + i * M, close, hi, lo, close, 1.0)


def history(n: int = 60) -> list[Candle]:
    """n candles alternating between 101 and 100, the last at 100."""
    return [bar(i, 100.0 * (1.01 if (n - 1 - i) % 2 else 1.0)) for i in range(n)]


def with_candidate(
    excursion: float, next_close: float = 100.0, field: str = "high", n: int = 60
) -> list[Candle]:
    """History ending at close 100, a candidate, and the next candle."""
    hist = history(n)
    ref = 100.0
    if field == "high":
        cand = bar(n, ref, high=ref * math.exp(excursion))
    elif field == "low":
        cand = bar(n, ref, low=ref * math.exp(-excursion))
    else:
        spiked = ref * math.exp(excursion)
        cand = bar(n, spiked)
    return [*hist, cand, bar(n + 1, next_close)]


def spikes(candles: list[Candle], **cfg: float) -> list[int]:
    config = AnomalyConfig(**cfg)  # type: ignore[arg-type]
    return [a.open_time_ms for a in detect_spikes(candles, ONE_MIN, config)]


class TestThreshold:
    """The excursion must exceed max(multiple x median move, ln(1 + min move))."""

    def test_just_above_and_below_the_scale_threshold(self) -> None:
        """20 x the median move: a hair above is a spike, a hair below is not."""
        threshold = 20 * STEP
        assert spikes(with_candidate(threshold * 1.001)) == [T0 + 60 * M]
        assert spikes(with_candidate(threshold * 0.999)) == []

    def test_floor_applies_in_a_quiet_series(self) -> None:
        """In a series that moves one tick at a time only a move beyond the floor is a spike."""
        flat = [bar(i, 100.0 + 0.01 * ((59 - i) % 2)) for i in range(60)]
        floor = math.log1p(0.10)
        above = [*flat, bar(60, 100.0, high=100.0 * math.exp(floor * 1.001)), bar(61, 100.0)]
        below = [*flat, bar(60, 100.0, high=100.0 * math.exp(floor * 0.999)), bar(61, 100.0)]
        assert spikes(above) == [T0 + 60 * M]
        assert spikes(below) == []

    def test_flat_candles_do_not_shrink_the_scale(self) -> None:
        """Zero moves stay out of the scale: after a flat stretch it is the one before."""
        candles = [*history(60), *(bar(60 + i, 100.0) for i in range(100))]
        candles += [bar(160, 100.0, high=100.0 * math.exp(0.15)), bar(161, 100.0)]
        assert spikes(candles) == []
        assert spikes([*candles[:-2], bar(160, 130.0), bar(161, 100.0)]) == [T0 + 160 * M]

    def test_no_judgement_without_moves(self) -> None:
        """A series that never moved has no scale: nothing is judged."""
        flat = [bar(i, 100.0) for i in range(60)]
        assert spikes([*flat, bar(60, 1000.0), bar(61, 100.0)]) == []

    def test_down_spike_and_close_spike(self) -> None:
        """A wick down and a whole candle up both count."""
        assert spikes(with_candidate(math.log(10), field="low")) == [T0 + 60 * M]
        assert spikes(with_candidate(math.log(10), field="close")) == [T0 + 60 * M]

    def test_heavier_history_raises_the_bar(self) -> None:
        """The same 30 % move is a spike in a calm series and not in a wild one."""
        calm = with_candidate(math.log(1.3))
        wild = [bar(i, 100.0 * (1.03 if i % 2 else 1.0)) for i in range(60)]
        wild += [bar(60, 100.0, high=130.0), bar(61, 100.0)]
        assert spikes(calm) == [T0 + 60 * M]
        assert spikes(wild) == []


class TestReversion:
    """Only a move the next candle undoes is a spike; a jump that persists is not."""

    def test_persistent_jump(self) -> None:
        """A whole candle at 10x followed by another at 10x is a jump."""
        assert spikes(with_candidate(math.log(10), next_close=1000.0, field="close")) == []

    def test_revert_fraction_edge(self) -> None:
        """The next close within the revert fraction of the excursion reverts; beyond does not."""
        e = math.log(2.0)
        inside = 100.0 * math.exp(0.249 * e)
        outside = 100.0 * math.exp(0.251 * e)
        plain = {"spike_apart_multiple": math.inf}  # the relief below, off
        assert spikes(with_candidate(e, next_close=inside, field="close"), **plain) == [T0 + 60 * M]
        assert spikes(with_candidate(e, next_close=outside, field="close"), **plain) == []

    def test_the_market_may_move_on_after_a_spike(self) -> None:
        """A next candle far back from the extreme needs only twice the fraction (a daily
        bad print followed by a genuine large move; missed by a quarter alone)."""
        e, threshold = math.log(2.0), 20 * STEP  # 0.693 and 0.199
        moved_on = 100.0 * math.exp(0.4 * e)  # 0.4 of the excursion: 0.42 back from 200
        assert spikes(with_candidate(e, next_close=moved_on, field="close")) == [T0 + 60 * M]
        assert e - 0.4 * e > 1.5 * threshold

    def test_twice_the_fraction_edge(self) -> None:
        """Within twice the fraction reverts once the next candle is far back; beyond does not."""
        e = math.log(2.0)
        inside = 100.0 * math.exp(0.499 * e)
        outside = 100.0 * math.exp(0.501 * e)
        assert spikes(with_candidate(e, next_close=inside, field="close")) == [T0 + 60 * M]
        assert spikes(with_candidate(e, next_close=outside, field="close")) == []

    def test_relief_needs_the_next_candle_far_from_the_extreme(self) -> None:
        """Just inside spike_apart_multiple thresholds of the extreme, a quarter still rules."""
        e, threshold = math.log(2.0), 20 * STEP
        close = 100.0 * math.exp(0.4 * e)
        apart = e - 0.4 * e  # 0.416
        near = {"spike_apart_multiple": apart / threshold + 0.01}
        far = {"spike_apart_multiple": apart / threshold - 0.01}
        assert spikes(with_candidate(e, next_close=close, field="close"), **near) == []
        assert spikes(with_candidate(e, next_close=close, field="close"), **far) == [T0 + 60 * M]

    def test_relief_needs_the_next_extreme_far_too(self) -> None:
        """A next candle closing far back but wicking up near the spike level is no reversion."""
        e = math.log(2.0)
        candles = with_candidate(e, next_close=100.0 * math.exp(0.4 * e), field="close")
        candles[-1] = bar(61, candles[-1].close or 0.0, high=190.0)
        assert spikes(candles) == []

    def test_next_extreme_must_come_back(self) -> None:
        """A next candle closing back but wicking to the spike level again is not a reversion."""
        candles = with_candidate(math.log(2.0))
        candles[-1] = bar(61, 100.0, high=199.0)
        assert spikes(candles) == []


class TestStreaming:
    """The detector confirms one slot later, skips what it cannot judge, and equals the batch."""

    def test_confirmed_when_the_next_candle_arrives(self) -> None:
        """The spike is returned by the push of the candle after it, naming its values."""
        candles = with_candidate(math.log(10))
        det = SpikeDetector(ONE_MIN)
        found = [det.push(c) for c in candles]
        assert all(f == [] for f in found[:-1])
        (a,) = found[-1]
        assert (a.rule, a.open_time_ms, a.field) == (AnomalyRule.PRICE_SPIKE, T0 + 60 * M, "high")
        assert a.observed == pytest.approx(1000.0) and a.expected == 100.0

    def test_not_before_min_history(self) -> None:
        """With fewer than spike_min_history moves nothing is judged."""
        assert spikes(with_candidate(math.log(10), n=20)) == []
        assert spikes(with_candidate(math.log(10), n=22)) == [T0 + 22 * M]

    def test_gap_breaks_the_neighbourhood(self) -> None:
        """A missing slot between the spike and the next candle: no judgement."""
        candles = with_candidate(math.log(10))
        last = candles[-1]
        candles[-1] = Candle(last.open_time_ms + M, 100.0, 100.0, 100.0, 100.0, 1.0)
        assert spikes(candles) == []

    def test_invalid_neighbour(self) -> None:
        """A next candle with an invalid price cannot confirm a spike."""
        candles = with_candidate(math.log(10))
        candles[-1] = Candle(candles[-1].open_time_ms, math.nan, 1.0, 1.0, 1.0, 1.0)
        assert spikes(candles) == []

    def test_repeated_and_older_candles_are_ignored(self) -> None:
        """A re-read of a slot already seen changes nothing."""
        candles = with_candidate(math.log(10))
        det = SpikeDetector(ONE_MIN)
        out = []
        for c in candles[:-1]:
            out += det.push(c)
            out += det.push(c)
        out += det.push(candles[0])
        out += det.push(candles[-1])
        assert [a.open_time_ms for a in out] == [T0 + 60 * M]

    def test_extreme_prices_do_not_overflow(self) -> None:
        """Moves between the largest and smallest floats are computed without overflow."""
        closes = [1e308, 5e-324, 1e308, 5e-324, 1e308]
        candles = [bar(i, c) for i, c in enumerate(closes)]
        assert spikes(candles, spike_min_history=1) == []  # it always moves that much

    def test_spike_stays_out_of_the_scale(self) -> None:
        """After a spike the next candidate is judged against the last good close."""
        candles = with_candidate(math.log(10))
        # A second spike two slots later is still found.
        candles += [bar(62, 100.0, high=1000.0), bar(63, 100.0)]
        assert spikes(candles) == [T0 + 60 * M, T0 + 62 * M]


class TestScale:
    """The running median over the window equals the textbook median."""

    @settings(max_examples=200, deadline=None)
    @given(
        moves=st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=200),
        window=st.integers(2, 70),
    )
    def test_running_median(self, moves: list[float], window: int) -> None:
        """After any sequence of moves the scale is the median of the last ``window``."""
        det = SpikeDetector(ONE_MIN, AnomalyConfig(spike_window=window, spike_min_history=1))
        for m in moves:
            det._add_move(m)
        assert det._median() == statistics.median(moves[-window:])
