"""Unit tests for the exact candle rules (auditsvc.domain.candle_rules) and validity."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditsvc.devtools.fault_injection import inject
from auditsvc.devtools.market_data import generate
from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.candle_rules import all_rules, check_candle
from auditsvc.domain.content_audit import audit_candles
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.validity import anomalous_candles, validity

R = AnomalyRule
M = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
ONE_MIN = parse_timeframe("1m")
NOW = T0 + 10 * M
GOOD = Candle(T0, 100.0, 110.0, 90.0, 105.0, 2.0, T0 + M - 1, 3, 1.0, 200.0)


def rules(candle: Candle, now: int = NOW, tf: str = "1m", **cfg: float) -> list[AnomalyRule]:
    config = AnomalyConfig(**cfg)  # type: ignore[arg-type]
    return [a.rule for a in check_candle(candle, parse_timeframe(tf), now, config)]


def with_(**changes: object) -> Candle:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


class TestClean:
    """A well-formed candle passes every rule, and optional fields may be absent."""

    def test_good_candle(self) -> None:
        """The reference candle has no finding."""
        assert rules(GOOD) == []

    def test_optional_fields_absent(self) -> None:
        """Without close time, trades, taker and quote volume, their rules are off."""
        bare = Candle(T0, 100.0, 110.0, 90.0, 105.0, 2.0)
        assert rules(bare) == []

    def test_flat_zero_volume_candle(self) -> None:
        """A candle without trades (flat, zero volume, zero quote) is valid on its own."""
        assert rules(with_(open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0, trade_count=0,
                           taker_buy_volume=0.0, quote_volume=0.0)) == []  # fmt: skip


class TestPrices:
    """PRICE_INVALID, HIGH_BELOW_BODY and LOW_ABOVE_BODY at their boundaries."""

    @pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf, 0.0, -1.0, True, "1"])
    @pytest.mark.parametrize("name", ["open", "high", "low", "close"])
    def test_invalid_price(self, name: str, bad: object) -> None:
        """Missing, NaN, infinite, zero, negative or non-numeric prices are PRICE_INVALID only."""
        assert rules(with_(**{name: bad})) == [R.PRICE_INVALID]

    def test_one_finding_for_several_bad_prices(self) -> None:
        """Two bad prices still make one PRICE_INVALID finding, naming the first."""
        found = check_candle(with_(open=math.nan, close=0.0), ONE_MIN, NOW)
        assert [(a.rule, a.field) for a in found] == [(R.PRICE_INVALID, "open")]

    def test_smallest_positive_price_is_valid(self) -> None:
        """Any finite price above zero is a price."""
        tiny = 5e-324
        assert rules(with_(open=tiny, high=tiny, low=tiny, close=tiny, quote_volume=0.0,
                           volume=0.0, trade_count=0, taker_buy_volume=0.0)) == []  # fmt: skip

    def test_high_equal_to_body_passes(self) -> None:
        """high == max(open, close) is allowed; one ulp lower within tolerance too."""
        assert rules(with_(high=105.0, quote_volume=200.0)) == []
        assert rules(with_(high=math.nextafter(105.0, 0), quote_volume=200.0)) == []

    def test_high_below_body(self) -> None:
        """high below max(open, close) beyond the tolerance is reported with both values."""
        found = check_candle(with_(high=104.99, quote_volume=200.0), ONE_MIN, NOW)
        assert found == [Anomaly(T0, R.HIGH_BELOW_BODY, found[0].detail, "high", 104.99, 105.0)]

    def test_high_tolerance_edge(self) -> None:
        """With price_rel_tol=0 one ulp below the body is already a finding."""
        candle = with_(high=math.nextafter(105.0, 0), quote_volume=200.0)
        assert rules(candle, price_rel_tol=0.0) == [R.HIGH_BELOW_BODY]

    def test_low_equal_and_above_body(self) -> None:
        """low == min(open, close) passes; above it is LOW_ABOVE_BODY."""
        assert rules(with_(low=100.0)) == []
        assert rules(with_(low=100.01, quote_volume=201.0)) == [R.LOW_ABOVE_BODY]

    def test_high_below_low_is_caught(self) -> None:
        """high < low always violates a body rule."""
        assert rules(with_(high=95.0, low=96.0, open=95.5, close=95.5, quote_volume=191.0)) == [
            R.HIGH_BELOW_BODY,
            R.LOW_ABOVE_BODY,
        ]


class TestVolumes:
    """VOLUME_INVALID and the trade, taker and quote consistency rules."""

    @pytest.mark.parametrize("bad", [None, math.nan, math.inf, -1e-12, False])
    def test_invalid_volume(self, bad: object) -> None:
        """Missing, NaN, infinite or negative volumes are VOLUME_INVALID; dependants are skipped."""
        assert rules(with_(volume=bad)) == [R.VOLUME_INVALID]

    def test_zero_trades_with_volume(self) -> None:
        """Zero trades with a volume is TRADES_WITHOUT_VOLUME."""
        assert rules(with_(trade_count=0)) == [R.TRADES_WITHOUT_VOLUME]

    def test_trades_with_zero_volume(self) -> None:
        """Trades with no volume (binance-public-data issue 395) is TRADES_WITHOUT_VOLUME."""
        candle = with_(volume=0.0, taker_buy_volume=0.0, quote_volume=0.0)
        assert rules(candle) == [R.TRADES_WITHOUT_VOLUME]

    def test_negative_trade_count(self) -> None:
        """A negative trade count is reported."""
        assert rules(with_(trade_count=-1)) == [R.TRADES_WITHOUT_VOLUME]

    def test_taker_equal_to_volume_passes(self) -> None:
        """Every trade bought by the taker: taker == volume is fine."""
        assert rules(with_(taker_buy_volume=2.0)) == []

    @pytest.mark.parametrize("taker", [2.001, -0.1, math.nan])
    def test_taker_outside_volume(self, taker: float) -> None:
        """Taker-buy volume above the volume, negative or NaN is TAKER_ABOVE_VOLUME."""
        assert rules(with_(taker_buy_volume=taker)) == [R.TAKER_ABOVE_VOLUME]

    @pytest.mark.parametrize("quote", [180.0, 220.0])
    def test_vwap_at_range_edges_passes(self, quote: float) -> None:
        """quote / volume equal to low or high is inside the range."""
        assert rules(with_(quote_volume=quote)) == []

    def test_vwap_tolerance_edge(self) -> None:
        """Just inside quote_rel_tol passes; just outside it is reported with the bound."""
        inside = 220.0 * (1 + 0.9e-6)
        outside = 220.0 * (1 + 1.1e-6)
        assert rules(with_(quote_volume=inside)) == []
        found = check_candle(with_(quote_volume=outside), ONE_MIN, NOW)
        assert [(a.rule, a.expected) for a in found] == [(R.QUOTE_VOLUME_OUTSIDE_RANGE, 110.0)]

    def test_quote_below_range_and_with_zero_volume(self) -> None:
        """A VWAP under low, or a quote volume without volume, is reported."""
        assert rules(with_(quote_volume=179.0)) == [R.QUOTE_VOLUME_OUTSIDE_RANGE]
        zero = with_(volume=0.0, trade_count=0, taker_buy_volume=0.0, quote_volume=1.0)
        assert rules(zero) == [R.QUOTE_VOLUME_OUTSIDE_RANGE]


class TestTimes:
    """TIME_MISALIGNED, TIME_IN_FUTURE and CLOSE_TIME_INVALID, on the week and month grids too."""

    def test_misaligned(self) -> None:
        """One millisecond off the grid is misaligned; the finding gives the slot's open."""
        found = check_candle(with_(open_time_ms=T0 + 1), ONE_MIN, NOW)
        assert [(a.rule, a.observed, a.expected) for a in found] == [
            (R.TIME_MISALIGNED, T0 + 1, T0)
        ]

    def test_week_opens_on_monday(self) -> None:
        """A 1w candle opening on Monday 00:00 UTC is aligned; on Sunday it is not."""
        week = Candle(T0, 1.0, 1.0, 1.0, 1.0, 0.0, T0 + 7 * 86_400_000 - 1)
        assert rules(week, now=T0 + 8 * 86_400_000, tf="1w") == []
        sunday = dataclasses.replace(week, open_time_ms=T0 - 86_400_000)
        assert R.TIME_MISALIGNED in rules(sunday, now=T0 + 8 * 86_400_000, tf="1w")

    def test_month_close_time(self) -> None:
        """A 1M candle of February 2024 closes 1 ms before 1 March (29 days)."""
        feb = 1_706_745_600_000  # 2024-02-01
        march = 1_709_251_200_000
        month = Candle(feb, 1.0, 1.0, 1.0, 1.0, 0.0, march - 1)
        assert rules(month, now=march + 1, tf="1M") == []
        wrong = dataclasses.replace(month, close_time_ms=feb + 30 * 86_400_000 - 1)
        assert rules(wrong, now=march + 1, tf="1M") == [R.CLOSE_TIME_INVALID]

    @pytest.mark.parametrize("close", [T0 + M, T0 + M - 2, (T0 + M - 1) * 1000, T0])
    def test_close_time_invalid(self, close: int) -> None:
        """Off by one, in microseconds or equal to the open: CLOSE_TIME_INVALID."""
        assert rules(with_(close_time_ms=close)) == [R.CLOSE_TIME_INVALID]

    def test_close_time_offset_setting(self) -> None:
        """A store whose close is the next open uses close_time_offset_ms=0."""
        assert rules(with_(close_time_ms=T0 + M), close_time_offset_ms=0) == []

    def test_future_boundary(self) -> None:
        """An open time up to now + one slot + grace passes; 1 ms later is in the future."""
        now = T0 - 30_000  # mid-slot: the slot forming opens at T0 - M
        latest = now + M + 5_000
        at_limit = with_(open_time_ms=T0, close_time_ms=T0 + M - 1)
        assert latest >= T0 and rules(at_limit, now=now) == []
        assert rules(with_(), now=T0 - M - 5_001) == [R.TIME_IN_FUTURE]
        assert rules(with_(), now=T0 - M - 5_000) == []


class TestValidity:
    """The validity score counts each anomalous candle once."""

    def test_formula(self) -> None:
        """100 x clean / present, 100 with nothing present, clamped."""
        assert validity(200, 1) == 99.5
        assert validity(0, 0) == 100.0
        assert validity(10, 20) == 0.0
        assert validity(10, -1) == 100.0

    def test_distinct_candles(self) -> None:
        """Two findings on one candle count as one anomalous candle."""
        a = Anomaly(T0, R.HIGH_BELOW_BODY, "x")
        b = Anomaly(T0, R.QUOTE_VOLUME_OUTSIDE_RANGE, "y")
        c = Anomaly(T0 + M, R.PRICE_SPIKE, "z")
        assert anomalous_candles([a, b, c]) == 2


class TestConfig:
    """The configuration rejects nonsense at construction."""

    @pytest.mark.parametrize(
        "field,value",
        [
            ("price_rel_tol", -1e-9),
            ("volume_rel_tol", 1.0),
            ("quote_rel_tol", math.nan),
            ("future_grace_ms", -1),
            ("spike_window", 1),
            ("spike_min_history", 0),
            ("spike_multiple", 0.0),
            ("spike_min_move", 0.0),
            ("spike_revert_fraction", 1.0),
            ("frozen_min_run", 1),
        ],
    )
    def test_rejects(self, field: str, value: float) -> None:
        """Each out-of-range parameter raises ValueError."""
        with pytest.raises(ValueError):
            AnomalyConfig(**{field: value})  # type: ignore[arg-type]


values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
)


class TestTotal:
    """The rules never raise, whatever a document holds."""

    @settings(max_examples=300, deadline=None)
    @given(
        prices=st.lists(values, min_size=6, max_size=6),
        extras=st.lists(values, min_size=3, max_size=3),
        close=st.one_of(st.none(), st.integers(-(2**63), 2**63)),
    )
    def test_any_values(self, prices: list[Any], extras: list[Any], close: int | None) -> None:
        """Any mix of values gives at most one finding per rule, and streaming never raises."""
        # Four neighbours, so the spike rule judges the third against the first move.
        candles = [
            Candle(T0 + i * M, *(prices[i:] + prices[:i])[:5], close, *extras)  # type: ignore[misc]
            for i in range(4)
        ]
        for c in candles:
            found = [a.rule for a in check_candle(c, ONE_MIN, NOW)]
            assert len(found) == len(set(found))
        config = AnomalyConfig(spike_min_history=1, frozen_min_run=2)
        audit_candles(candles, ONE_MIN, NOW, config)


near = st.sampled_from(
    [100.0, math.nextafter(100.0, 0), math.nextafter(100.0, 200), 99.0, 101.0, 0.0, -1.0,
     math.nan, math.inf, 100, None, True]
)  # fmt: skip


class TestFastPath:
    """check_candle's fast path for clean candles answers as the full rules do."""

    @settings(max_examples=500, deadline=None)
    @given(
        ohlcv=st.lists(near, min_size=5, max_size=5),
        extras=st.tuples(
            st.sampled_from([None, T0 + M - 1, T0 + M]),
            st.sampled_from([None, 0, 1, -1, True]),
            st.sampled_from([None, 0.0, 1.0, 1e9, math.nan]),
            st.sampled_from([None, 0.0, 99.0, 100.0, 101.0, 1e9, math.nan]),
        ),
        offset=st.sampled_from([0, 1]),
        tol=st.sampled_from([0.0, 1e-9]),
    )
    def test_same_answer(
        self, ohlcv: list[Any], extras: tuple[Any, ...], offset: int, tol: float
    ) -> None:
        """On values at every boundary, with and without tolerance, both agree."""
        candle = Candle(T0 + offset, *ohlcv, *extras)
        config = AnomalyConfig(price_rel_tol=tol, quote_rel_tol=tol)
        assert check_candle(candle, ONE_MIN, NOW, config) == all_rules(candle, ONE_MIN, NOW, config)

    def test_same_answer_on_generated_faults(self) -> None:
        """On a generated series with every fault injected, both agree candle by candle."""
        clean = generate(2, ONE_MIN, T0, 6_000)
        now = T0 + 6_000 * M
        faulty = inject(clean, ONE_MIN, now, seed=3, per_rule=10, frozen_run=(60, 61)).candles
        for c in faulty:
            assert check_candle(c, ONE_MIN, now) == all_rules(c, ONE_MIN, now, AnomalyConfig())
