"""Unit tests for auditsvc.domain.series_state: state, freshness, store rule, revealed gaps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auditsvc.domain.series_state import (
    LiveState,
    SeriesState,
    freshness,
    must_store,
    revealed_gap,
    series_state,
    window_state,
)
from auditsvc.domain.timeframes import TIMEFRAMES, parse_timeframe
from auditsvc.domain.values import Gap

SEC = 1_000
MIN = 60_000
T0 = 1_700_000_040_000  # a minute boundary
M1 = parse_timeframe("1m")
S1 = parse_timeframe("1s")


class TestSeriesState:
    """The state follows from the newest candle, the clock and the grace."""

    def test_no_data(self) -> None:
        """No candle at all is NO_DATA with no lateness."""
        assert series_state(M1, None, T0, 10 * SEC) == LiveState(SeriesState.NO_DATA, None, 0)

    def test_live_within_grace(self) -> None:
        """A slot that closed less than the grace ago is not yet due: still LIVE."""
        # Newest candle opens at T0; slot T0+1m closed at T0+2m; grace 10 s.
        now = T0 + 2 * MIN + 9 * SEC
        assert series_state(M1, T0, now, 10 * SEC).state is SeriesState.LIVE

    def test_late_once_grace_passed(self) -> None:
        """Once close + grace of the next slot has passed, the series is LATE by one."""
        now = T0 + 2 * MIN + 10 * SEC
        assert series_state(M1, T0, now, 10 * SEC) == LiveState(SeriesState.LATE, T0, 1)

    def test_late_counts_every_due_slot(self) -> None:
        """late_candles counts each due slot after the newest candle."""
        now = T0 + 5 * MIN + 30 * SEC
        assert series_state(M1, T0, now, 10 * SEC).late_candles == 4

    def test_one_second(self) -> None:
        """1s series turn LATE a second (plus grace) after the next slot closes."""
        assert series_state(S1, T0, T0 + 2 * SEC + 499, 500).state is SeriesState.LIVE
        assert series_state(S1, T0, T0 + 2 * SEC + 500, 500).late_candles == 1

    def test_future_candle_is_live(self) -> None:
        """A candle newer than the settled edge (a forming slot) is LIVE."""
        assert series_state(M1, T0 + MIN, T0 + MIN + 5 * SEC, 0).state is SeriesState.LIVE

    @given(
        st.sampled_from(TIMEFRAMES[:-1]),
        st.integers(0, 10**6),
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.integers(0, 60_000),
    )
    def test_monotone_in_time(self, name: str, k: int, dt1: int, dt2: int, grace: int) -> None:
        """For a fixed newest candle lateness never decreases as time passes."""
        tf = parse_timeframe(name)
        newest = tf.shift(tf.floor(T0), k)
        a = series_state(tf, newest, newest + dt1, grace)
        b = series_state(tf, newest, newest + dt1 + dt2, grace)
        assert b.late_candles >= a.late_candles
        assert (a.state is SeriesState.LATE) == (a.late_candles > 0)

    @given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 10**7))
    def test_newer_candle_never_later(self, k: int, extra: int, dt_ms: int) -> None:
        """A newer candle never makes the series later."""
        older = M1.shift(T0, k)
        newer = M1.shift(older, extra)
        now = newer + dt_ms
        assert (
            series_state(M1, newer, now, 0).late_candles
            <= series_state(M1, older, now, 0).late_candles
        )


class TestFreshness:
    """Freshness decays 20 points per missed slot."""

    def test_values(self) -> None:
        """LIVE 100, LATE by 2 is 60, LATE by 5+ is 0, NO_DATA 0."""
        assert freshness(LiveState(SeriesState.LIVE, T0, 0)) == 100.0
        assert freshness(LiveState(SeriesState.LATE, T0, 2)) == 60.0
        assert freshness(LiveState(SeriesState.LATE, T0, 9)) == 0.0
        assert freshness(LiveState(SeriesState.NO_DATA, None, 0)) == 0.0


class TestMustStore:
    """A score is stored on each state change and per further missed slot while LATE."""

    def test_first_observation(self) -> None:
        """The first state seen is always stored."""
        assert must_store(None, LiveState(SeriesState.LIVE, T0, 0))

    def test_state_change(self) -> None:
        """LIVE -> LATE and LATE -> LIVE are stored."""
        live, late = LiveState(SeriesState.LIVE, T0, 0), LiveState(SeriesState.LATE, T0, 1)
        assert must_store(live, late)
        assert must_store(late, LiveState(SeriesState.LIVE, T0 + 2 * MIN, 0))

    def test_live_candles_store_nothing(self) -> None:
        """A new candle keeping the series LIVE stores nothing."""
        assert not must_store(
            LiveState(SeriesState.LIVE, T0, 0), LiveState(SeriesState.LIVE, T0 + MIN, 0)
        )

    def test_late_per_slot(self) -> None:
        """While LATE, one more missed slot stores once; the same lateness does not."""
        one, two = LiveState(SeriesState.LATE, T0, 1), LiveState(SeriesState.LATE, T0, 2)
        assert must_store(one, two)
        assert not must_store(two, two)

    @given(st.lists(st.integers(0, 50), min_size=1, max_size=40))
    def test_late_writes_bounded(self, deltas: list[int]) -> None:
        """Over any clock path a LATE series stores at most once per slot it falls behind."""
        now, prev, stored = T0 + MIN, None, 0
        for d in deltas:
            now += d * SEC
            cur = series_state(M1, T0, now, 0)
            if must_store(prev, cur):
                stored += 1
            prev = cur
        assert prev is not None
        assert stored <= 1 + prev.late_candles


class TestRevealedGap:
    """An insert more than one slot after the previous newest reveals a gap."""

    def test_next_slot_no_gap(self) -> None:
        """The very next slot reveals nothing."""
        assert revealed_gap(M1, T0, T0 + MIN) is None

    def test_hole(self) -> None:
        """Skipping three slots reveals exactly those three."""
        assert revealed_gap(M1, T0, T0 + 4 * MIN) == Gap(T0 + MIN, T0 + 4 * MIN, 3)

    def test_first_and_old_inserts(self) -> None:
        """No previous candle, a repeat or an older insert reveal nothing."""
        assert revealed_gap(M1, None, T0) is None
        assert revealed_gap(M1, T0, T0) is None
        assert revealed_gap(M1, T0, T0 - 5 * MIN) is None

    @given(st.integers(0, 500), st.integers(1, 500))
    def test_gap_matches_scanner_count(self, k: int, step: int) -> None:
        """The gap's size is the number of slots strictly between the two candles."""
        prev = M1.shift(T0, k)
        new = M1.shift(prev, step)
        gap = revealed_gap(M1, prev, new)
        assert (gap.missing_candles if gap else 0) == step - 1


class TestWindowState:
    """A cycle judges a series as of its window's end, and dates the verdict no later
    than the last moment it held."""

    def test_current_window(self) -> None:
        """A window ending at the settled edge gives the state, dated at the read."""
        now = T0 + 3 * MIN + 20 * SEC
        edge = T0 + 3 * MIN
        found = window_state(M1, edge, T0, now, 10 * SEC)
        assert found == (LiveState(SeriesState.LATE, T0, 2), now)

    def test_slow_cycle_is_not_dated_late(self) -> None:
        """A cycle finishing hours after its window was fixed judges the window's time,
        not its own: LIVE at the window's edge, dated before the next slot fell due."""
        now = T0 + 600 * MIN
        found = window_state(M1, T0 + MIN, T0, now, 0)
        assert found == (LiveState(SeriesState.LIVE, T0, 0), T0 + 2 * MIN - 1)

    def test_empty_window(self) -> None:
        """A window holding no candle vouches for nothing (older candles may exist)."""
        assert window_state(M1, T0 + 600 * MIN, None, T0 + 600 * MIN, 0) is None
