"""The demo's candles: clean ones break no content rule, planted ones are exactly what is found."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from auditsvc.devtools.demo import demo_candle, demo_series, plant_demo_anomalies
from auditsvc.domain.aggregates import AggregateStatus, check_aggregate
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.content_audit import audit_candles
from auditsvc.domain.timeframes import parse_timeframe as tf

END_MS = 1_767_268_800_000 + 17 * 60_000 + 5_000  # 2026-01-01T12:17:05Z, mid-hour
Key = tuple[int, AnomalyRule]


def candle(doc: dict[str, Any]) -> Candle:
    t = round(doc["timestamp"].timestamp() * 1000)
    return Candle(t, doc["open"], doc["high"], doc["low"], doc["close"], doc["volume"])


def series_findings(docs: list[dict[str, Any]], name: str) -> set[Key]:
    found = audit_candles([candle(d) for d in docs], tf(name), END_MS)
    return {(a.open_time_ms, a.rule) for a in found}


def aggregate_findings(
    higher: list[dict[str, Any]], h: str, children: list[dict[str, Any]], c: str
) -> set[Key]:
    kids = [candle(d) for d in children]
    out = set()
    for doc in higher:
        result = check_aggregate(tf(h), candle(doc), tf(c), kids)
        if result.finding is not None:
            out.add((result.finding.open_time_ms, result.finding.rule))
    return out


def seeded(price: float = 200.0) -> dict[str, tuple[list[dict[str, Any]], Any]]:
    """What seed-demo makes of one symbol with the default timeframes."""
    return {
        "1m": demo_series("ETHUSDT", "1m", END_MS, 1440, price),
        "1h": demo_series("ETHUSDT", "1h", END_MS, 48, price),
    }


class TestCleanDemo:
    """The demo's own candles break no content rule, in one series or across timeframes."""

    @pytest.mark.parametrize(
        ("name", "slots"), [("1s", 600), ("1m", 1440), ("5m", 288), ("1h", 48), ("1d", 48)]
    )
    def test_series_yield_no_finding(self, name: str, slots: int) -> None:
        """Gaps and duplicates aside, a seeded demo series is clean for every single-series rule."""
        docs, _ = demo_series("BTCUSDT", name, END_MS, slots)
        assert series_findings(docs, name) == set()

    @pytest.mark.parametrize(
        ("child", "higher"),
        [("1s", "1m"), ("1m", "5m"), ("1m", "1h"), ("5m", "1h"), ("1h", "1d"), ("1d", "1w")],
    )
    def test_higher_candles_are_the_aggregate_of_their_children(
        self, child: str, higher: str
    ) -> None:
        """A demo candle equals the aggregate of the demo candles it spans."""
        for t in list(tf(higher).iter_opens(END_MS - 3 * tf(higher).nominal_ms, END_MS))[:2]:
            parent = candle(demo_candle("X", higher, t, 300.0))
            kids = [
                candle(demo_candle("X", child, o, 300.0))
                for o in tf(child).iter_opens(t, tf(higher).next_open(t))
            ]
            result = check_aggregate(tf(higher), parent, tf(child), kids)
            assert result.status is AggregateStatus.CONSISTENT, result.reason

    def test_consecutive_candles_differ(self) -> None:
        """No two neighbouring demo slots hold equal candles, so the feed never looks frozen."""
        docs, _ = demo_series("BTCUSDT", "1s", END_MS, 300)
        by_slot = {d["timestamp"]: (d["open"], d["high"], d["low"], d["close"]) for d in docs}
        values = [by_slot[t] for t in sorted(by_slot)]
        assert all(a != b for a, b in itertools.pairwise(values))


class TestPlantedDemo:
    """The planted symbol shows every kind of finding, and nothing else."""

    def test_findings_are_exactly_the_planted_candles(self) -> None:
        """Each timeframe's rules and the 1m -> 1h aggregate find exactly what was planted."""
        series = seeded()
        docs = {name: d for name, (d, _) in series.items()}
        planted = plant_demo_anomalies(docs)
        found = series_findings(docs["1m"], "1m") | series_findings(docs["1h"], "1h")
        found |= aggregate_findings(docs["1h"], "1h", docs["1m"], "1m")
        truth = {k for keys in planted.values() for k in keys}
        assert found == truth
        kinds = Counter(rule for _, rule in truth)
        assert set(kinds) == {
            AnomalyRule.PRICE_SPIKE,
            AnomalyRule.PRICE_INVALID,
            AnomalyRule.HIGH_BELOW_BODY,
            AnomalyRule.LOW_ABOVE_BODY,
            AnomalyRule.VOLUME_INVALID,
            AnomalyRule.TIME_MISALIGNED,
            AnomalyRule.FROZEN_FEED,
            AnomalyRule.AGGREGATE_MISMATCH,
        }
        assert kinds[AnomalyRule.FROZEN_FEED] == 61 and kinds[AnomalyRule.AGGREGATE_MISMATCH] == 1

    def test_gaps_duplicates_and_the_live_edge_are_kept(self) -> None:
        """The planted series keeps its slots and duplicates, and its newest 60 slots are clean."""
        series = seeded()
        before = {name: Counter(d["timestamp"] for d in docs) for name, (docs, _) in series.items()}
        docs = {name: d for name, (d, _) in series.items()}
        planted = plant_demo_anomalies(docs)
        for name, expected in before.items():
            after = Counter(d["timestamp"] for d in docs[name])
            aligned = {
                t: n for t, n in after.items() if tf(name).is_aligned(round(t.timestamp() * 1000))
            }
            assert aligned == expected, name
        edge = tf("1m").shift(tf("1m").floor(END_MS), -61)
        assert all(t < edge for t, _ in planted["1m"])
