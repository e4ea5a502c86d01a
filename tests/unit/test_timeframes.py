"""Unit tests for auditsvc.domain.timeframes."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.timeframes import TIMEFRAMES, default_window, parse_timeframe, settled_end
from auditsvc.domain.values import Window

MIN = 60_000
DAY = 86_400_000


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000


def weekday(t_ms: int) -> int:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=t_ms)).weekday()


class TestParse:
    """Parsing accepts exactly the Binance names, case-sensitively, and caches."""

    def test_order(self) -> None:
        """TIMEFRAMES lists the Binance names in ascending length."""
        assert TIMEFRAMES == (
            "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h",
            "6h", "8h", "12h", "1d", "3d", "1w", "1M",
        )  # fmt: skip

    def test_case_sensitive(self) -> None:
        """'1m' is one minute and '1M' is one (30-day nominal) month."""
        assert parse_timeframe("1m").nominal_ms == MIN
        assert parse_timeframe("1M").nominal_ms == 30 * DAY

    def test_one_second(self) -> None:
        """'1s' is a fixed 1,000 ms slot aligned to the epoch (Binance spot 1s klines)."""
        tf = parse_timeframe("1s")
        assert tf.fixed_ms == 1_000
        assert tf.floor(1_234_567) == 1_234_000
        assert tf.floor(-1) == -1_000
        assert tf.count_slots(0, 60_000) == 60

    def test_cached(self) -> None:
        """Parsing the same name twice returns the same instance."""
        assert parse_timeframe("4h") is parse_timeframe("4h")

    @pytest.mark.parametrize("name", ["foo", "1H", "1D", "1W", "", " 1m", "60s"])
    def test_unknown(self, name: str) -> None:
        """Unknown names raise InvalidArgument on field 'timeframe' listing the accepted ones."""
        with pytest.raises(InvalidArgument) as exc:
            parse_timeframe(name)
        assert exc.value.field == "timeframe"
        assert f"unknown timeframe {name!r}; accepted: 1s, 1m, 3m, 5m," in exc.value.message
        assert exc.value.message.endswith("1w, 1M")


class TestFixedAlignment:
    """Fixed timeframes align on epoch multiples, 1w on Mondays, with floor semantics."""

    def test_3d_epoch_multiples(self) -> None:
        """3d slots open on epoch multiples of 259_200_000 ms, also before 1970."""
        tf = parse_timeframe("3d")
        assert tf.floor(0) == 0
        assert tf.floor(ms(1970, 1, 5)) == 259_200_000
        assert tf.floor(-1) == -259_200_000
        assert tf.ceil(1) == 259_200_000
        assert tf.is_aligned(ms(1970, 1, 7))
        assert not tf.is_aligned(ms(1970, 1, 8))

    def test_1w_monday(self) -> None:
        """1w slots open Monday 00:00 UTC, including the week spanning the epoch."""
        tf = parse_timeframe("1w")
        assert tf.floor(0) == ms(1969, 12, 29)
        assert tf.floor(ms(2024, 1, 3, 12)) == ms(2024, 1, 1)
        assert tf.next_open(ms(2024, 1, 7, 23, 59)) == ms(2024, 1, 8)
        for t in range(-50 * DAY, 50 * DAY, DAY // 3 + 7):
            assert weekday(tf.floor(t)) == 0
            assert tf.floor(t) <= t < tf.next_open(t)

    def test_negative_floor(self) -> None:
        """Floor, ceil and next_open use floor semantics for instants before 1970."""
        tf = parse_timeframe("1h")
        assert tf.floor(-1) == -3_600_000
        assert tf.ceil(-1) == 0
        assert tf.next_open(-3_600_000) == 0

    def test_shift_and_unaligned(self) -> None:
        """shift moves aligned times by whole slots and refuses unaligned ones."""
        tf = parse_timeframe("15m")
        assert tf.shift(0, -4) == -3_600_000
        with pytest.raises(ValueError):
            tf.shift(1, 1)

    def test_iter_opens(self) -> None:
        """iter_opens yields aligned times in [start, end) from an unaligned start."""
        tf = parse_timeframe("5m")
        assert list(tf.iter_opens(1, 15 * MIN + 1)) == [5 * MIN, 10 * MIN, 15 * MIN]
        assert list(tf.iter_opens(10, 10)) == []

    @settings(max_examples=200, deadline=None)
    @given(
        name=st.sampled_from(TIMEFRAMES),
        start=st.integers(-(10**12), 2 * 10**12),
        span_slots=st.integers(-2, 40),
        jitter=st.integers(-(10**6), 10**6),
    )
    def test_count_slots_matches_walk(
        self, name: str, start: int, span_slots: int, jitter: int
    ) -> None:
        """count_slots equals a slot-by-slot walk, for every timeframe and any bounds."""
        tf = parse_timeframe(name)
        end = start + span_slots * tf.nominal_ms + jitter
        walked, t = 0, tf.floor(start)
        while t < end:
            walked += t >= start
            t = tf.next_open(t)
        assert tf.count_slots(start, end) == walked
        assert len(list(tf.iter_opens(start, end))) == walked


class TestMonth:
    """1M slots open on the first day of each calendar month."""

    def test_leap_february(self) -> None:
        """February 2024 has 29 days and its slot opens on Feb 1."""
        tf = parse_timeframe("1M")
        assert tf.floor(ms(2024, 2, 29, 23, 59)) == ms(2024, 2, 1)
        assert tf.next_open(ms(2024, 2, 1)) - ms(2024, 2, 1) == 29 * DAY
        assert tf.next_open(ms(2023, 2, 1)) - ms(2023, 2, 1) == 28 * DAY

    def test_december_to_january(self) -> None:
        """Shifting and next_open roll over the year boundary both ways."""
        tf = parse_timeframe("1M")
        assert tf.next_open(ms(2023, 12, 31, 23)) == ms(2024, 1, 1)
        assert tf.shift(ms(2024, 1, 1), -1) == ms(2023, 12, 1)
        assert tf.shift(ms(2023, 11, 1), 3) == ms(2024, 2, 1)
        assert tf.shift(ms(2024, 1, 1), -25) == ms(2021, 12, 1)

    def test_ceil_and_alignment(self) -> None:
        """Month ceil keeps opens and rounds anything else up to the next month."""
        tf = parse_timeframe("1M")
        assert tf.ceil(ms(2024, 2, 1)) == ms(2024, 2, 1)
        assert tf.ceil(ms(2024, 2, 1) + 1) == ms(2024, 3, 1)
        assert tf.is_aligned(ms(2024, 3, 1))
        assert not tf.is_aligned(ms(2024, 3, 2))
        with pytest.raises(ValueError):
            tf.shift(ms(2024, 3, 2), 1)

    def test_before_epoch(self) -> None:
        """The month containing -1 ms opens on 1969-12-01."""
        tf = parse_timeframe("1M")
        assert tf.floor(-1) == ms(1969, 12, 1)
        assert tf.ceil(-1) == 0

    def test_count_and_iter(self) -> None:
        """Counting and iterating months cross the year and a leap February."""
        tf = parse_timeframe("1M")
        assert tf.count_slots(ms(2024, 1, 15), ms(2024, 3, 1)) == 1
        assert tf.count_slots(ms(2024, 1, 1), ms(2024, 3, 1) + 1) == 3
        assert tf.count_slots(ms(2024, 3, 1), ms(2024, 3, 1)) == 0
        assert list(tf.iter_opens(ms(2023, 11, 15), ms(2024, 3, 2))) == [
            ms(2023, 12, 1),
            ms(2024, 1, 1),
            ms(2024, 2, 1),
            ms(2024, 3, 1),
        ]


class TestDefaultWindow:
    """default_window covers only closed slots and sizes by lookback or min_candles."""

    def test_1m_lookback(self) -> None:
        """A 1h lookback on 1m ends at the forming slot and spans 60 slots."""
        tf = parse_timeframe("1m")
        now = ms(2024, 1, 1, 0, 10, 30)
        end = ms(2024, 1, 1, 0, 10)
        assert default_window(tf, now, 3600, 10) == Window(end - 60 * MIN, end)

    def test_1m_min_candles_and_ceil(self) -> None:
        """min_candles wins when larger, and a partial slot of lookback rounds up."""
        tf = parse_timeframe("1m")
        now = ms(2024, 1, 1, 0, 10)
        assert default_window(tf, now, 60, 100) == Window(now - 100 * MIN, now)
        assert default_window(tf, now, 61, 0) == Window(now - 2 * MIN, now)

    def test_1m_negative_rejected(self) -> None:
        """Negative sizes are programming errors and raise ValueError."""
        with pytest.raises(ValueError):
            default_window(parse_timeframe("1m"), 0, -1, 0)

    def test_month(self) -> None:
        """On 1M, 90 days is 3 nominal months and 91 days rounds up to 4."""
        tf = parse_timeframe("1M")
        now = ms(2024, 3, 15, 12)
        assert default_window(tf, now, 90 * 86_400, 1) == Window(ms(2023, 12, 1), ms(2024, 3, 1))
        assert default_window(tf, now, 91 * 86_400, 1) == Window(ms(2023, 11, 1), ms(2024, 3, 1))
        assert default_window(tf, now, 0, 12) == Window(ms(2023, 3, 1), ms(2024, 3, 1))


class TestIngestGrace:
    """A slot is due only once its close plus the ingest grace has passed."""

    def test_recent_close_not_due(self) -> None:
        """A 1m slot that closed 5 s ago is outside the window with a 10 s grace."""
        tf = parse_timeframe("1m")
        now = ms(2024, 1, 1, 0, 10, 5)
        assert settled_end(tf, now, 10_000) == ms(2024, 1, 1, 0, 9)
        assert default_window(tf, now, 3600, 10, 10_000).end_ms == ms(2024, 1, 1, 0, 9)

    def test_due_after_grace(self) -> None:
        """Once close + grace has passed, the slot is in the window."""
        tf = parse_timeframe("1m")
        now = ms(2024, 1, 1, 0, 10, 10)
        assert settled_end(tf, now, 10_000) == ms(2024, 1, 1, 0, 10)

    def test_zero_grace_is_forming_slot(self) -> None:
        """Without grace the window ends at the open of the slot still forming."""
        tf = parse_timeframe("1s")
        assert settled_end(tf, 5_500, 0) == 5_000

    def test_negative_grace_rejected(self) -> None:
        """A negative grace is a programming error."""
        with pytest.raises(ValueError):
            settled_end(parse_timeframe("1m"), 0, -1)
