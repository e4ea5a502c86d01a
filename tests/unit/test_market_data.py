"""The generated market is clean for every rule, and every injected fault is found.

These are correctness properties of a deterministic, seeded generator, not timings:
a clean series yields no finding at all, the exact rules and the aggregate find every
injected fault and nothing else, spikes and frozen runs at least 99 % of them with
at least 99 % precision.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditsvc.devtools.detection_quality import measure
from auditsvc.devtools.fault_injection import SERIES_RULES, inject, inject_mismatches
from auditsvc.devtools.market_data import aggregate_up, generate
from auditsvc.domain.aggregates import AggregateStatus, check_aggregate
from auditsvc.domain.anomalies import EXACT_RULES, AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.content_audit import audit_candles
from auditsvc.domain.timeframes import TIMEFRAMES, Timeframe
from auditsvc.domain.timeframes import parse_timeframe as tf

T0 = 1_704_067_200_000  # Monday 2024-01-01
Key = tuple[int, AnomalyRule]


def now_after(candles: list[Candle]) -> int:
    last = candles[-1].close_time_ms
    assert last is not None
    return last + 1


def audit(candles: list[Candle], t: Timeframe, now_ms: int | None = None) -> set[Key]:
    now = now_after(candles) if now_ms is None else now_ms
    return {(a.open_time_ms, a.rule) for a in audit_candles(candles, t, now)}


def quality(truth: set[Key], found: set[Key], rule: AnomalyRule) -> tuple[float, float, int]:
    """Recall, precision and false positives of one rule (each faulty candle counts once)."""
    t = {k for k in truth if k[1] is rule}
    f = {k for k in found if k[1] is rule}
    hits = len(t & f)
    return hits / len(t), (hits / len(f) if f else 1.0), len(f - t)


class TestGenerator:
    """The generated market has the features the rules must not mistake for faults."""

    def test_deterministic_by_seed(self) -> None:
        """The same seed gives the same candles; another seed does not."""
        assert generate(1, tf("1m"), T0, 500) == generate(1, tf("1m"), T0, 500)
        assert generate(1, tf("1m"), T0, 500) != generate(2, tf("1m"), T0, 500)

    def test_market_features(self) -> None:
        """Heavy tails, clustered volatility, quiet flat candles with varying volume, jumps."""
        cs = generate(3, tf("1m"), T0, 50_000)
        closes = [c.close for c in cs if c.close is not None]
        moves = [math.log(b / a) for a, b in itertools.pairwise(closes)]
        moving = [m for m in moves if m]
        sd = statistics.pstdev(moving)
        kurtosis = statistics.fmean(m**4 for m in moving) / sd**4
        assert kurtosis > 6  # a Gaussian has 3
        # Volatility clusters: one hour's median move predicts the next hour's.
        hourly = [statistics.median(map(abs, moves[i : i + 60])) for i in range(0, 49_920, 60)]
        assert statistics.correlation(hourly[:-1], hourly[1:]) > 0.3
        flat = [c for c in cs if c.open == c.high == c.low == c.close and c.volume]
        assert len(flat) > 1_000 and len({c.volume for c in flat}) > 0.99 * len(flat)
        zero_runs = Counter[int]()
        run = 0
        for c in cs:
            run = run + 1 if c.volume == 0 else 0
            zero_runs[run] += 1
        assert 0 < max(zero_runs) < AnomalyConfig().frozen_min_run
        assert sum(1 for m in moves if abs(m) > math.log(1.03)) >= 3  # persistent jumps


class TestClean:
    """No clean generated series yields a finding, at any timeframe or aggregate."""

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**32 - 1), base=st.sampled_from(["1m", "1h"]))
    def test_no_finding_on_clean_data(self, seed: int, base: str) -> None:
        """Every rule is silent on a clean series and on every aggregate of it."""
        chain = {"1m": ["1m", "5m", "1h"], "1h": ["1h", "1d", "1w"]}[base]
        series = {base: generate(seed, tf(base), T0, 4_000)}
        for child, higher in itertools.pairwise(chain):
            series[higher] = aggregate_up(series[child], tf(child), tf(higher))
        if base == "1h":
            series["1M"] = aggregate_up(series["1d"], tf("1d"), tf("1M"))
        for name, candles in series.items():
            assert audit(candles, tf(name)) == set(), name
        pairs = [*itertools.pairwise(chain)] + ([("1d", "1M")] if base == "1h" else [])
        for child, higher in pairs:
            for c in series[higher]:
                result = check_aggregate(tf(higher), c, tf(child), series[child])
                assert result.status is AggregateStatus.CONSISTENT


class TestCleanEveryTimeframe:
    """Generated directly at every timeframe, under several seeds, a series yields no finding."""

    @pytest.mark.parametrize("name", TIMEFRAMES)
    @pytest.mark.parametrize("seed", [21, 22, 23])
    def test_no_finding(self, name: str, seed: int) -> None:
        """Heavy tails, quiet stretches and jumps at this timeframe's scale are never a finding."""
        candles = generate(seed, tf(name), T0, 1_000)
        assert audit(candles, tf(name)) == set()


class TestDetectionQuality:
    """Faults injected at random positions are found: recall and precision per rule."""

    @pytest.mark.parametrize(("name", "count"), [("1m", 40_000), ("1h", 25_000)])
    def test_series_rules(self, name: str, count: int) -> None:
        """Exact rules: 100 % recall, no false positive; spikes and frozen runs >= 99 %."""
        clean = generate(11, tf(name), T0, count)
        now = now_after(clean)
        injected = inject(clean, tf(name), now, seed=5, per_rule=30)
        truth = {(t, r) for t, r in injected.truth.items()}
        found = audit(injected.candles, tf(name), now)
        for rule in SERIES_RULES:
            recall, precision, false_positives = quality(truth, found, rule)
            if rule in EXACT_RULES:
                assert (recall, false_positives) == (1.0, 0), rule
            else:
                assert recall >= 0.99 and precision >= 0.99, (rule, recall, precision)

    def test_aggregates(self) -> None:
        """Every changed higher candle is a mismatch; a missing child never is."""
        hours = generate(12, tf("1h"), T0, 24 * 500)
        daily = aggregate_up(hours, tf("1h"), tf("1d"))
        for child_tf, children, higher in [
            ("1h", hours, "1d"),
            ("1d", daily, "1w"),
            ("1d", daily, "1M"),
        ]:
            stored = aggregate_up(children, tf(child_tf), tf(higher))
            injected = inject_mismatches(stored, seed=7, count=len(stored) // 3)
            # Drop one child of every fifth higher candle: those must be incomplete.
            dropped = {c.open_time_ms for c in stored[::5]}
            kept = [c for c in children if c.open_time_ms not in dropped]  # each one's first child
            found = set()
            for c in injected.candles:
                result = check_aggregate(tf(higher), c, tf(child_tf), kept)
                if c.open_time_ms in dropped:
                    assert result.status is AggregateStatus.INCOMPLETE
                elif result.finding is not None:
                    found.add(c.open_time_ms)
            truth = set(injected.truth) - dropped
            assert truth and found == truth, higher


class TestQualityReport:
    """The detection-quality report the bench quotes counts the same way as these tests."""

    def test_small_run(self) -> None:
        """A small 1h run: every rule at 100 % recall and precision, nothing on clean data."""
        rows, clean = measure("1h", 20_000, per_rule=5, seed=9)
        assert clean == 0
        assert [(q.rule, q.recall, q.precision) for q in rows] == [(q.rule, 1.0, 1.0) for q in rows]
        assert sum(q.injected for q in rows) > 11 * 5
