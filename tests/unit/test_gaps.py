"""Unit tests for auditsvc.domain.scanner."""

from __future__ import annotations

import calendar
import itertools
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditsvc.domain.scanner import SeriesScanner, scan
from auditsvc.domain.timeframes import Timeframe, parse_timeframe
from auditsvc.domain.values import DuplicateSlot, Gap, SeriesScan, Window

M = 60_000
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, aligned for every fixed timeframe up to 1d
ONE_MIN = parse_timeframe("1m")


def ms(y: int, mo: int, d: int, h: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, 0, 0, 0, 0, 0)) * 1000


def minutes(*slots: int) -> list[int]:
    return [T0 + s * M for s in slots]


def reference(tf: Timeframe, window: Window, timestamps: Sequence[int]) -> SeriesScan:
    """Brute-force model: count every timestamp, then walk the expected slots."""
    opens = list(tf.iter_opens(window.start_ms, window.end_ms))
    counts = Counter(t for t in timestamps if window.start_ms <= t < window.end_ms)
    open_set = set(opens)
    gaps: list[Gap] = []
    run: list[int] = []
    for t in [*opens, None]:
        if t is not None and counts[t] == 0:
            run.append(t)
        elif run:
            gaps.append(Gap(run[0], tf.next_open(run[-1]), len(run)))
            run = []
    present = [t for t in opens if counts[t]]
    return SeriesScan(
        window=window,
        expected_candles=len(opens),
        present_candles=len(present),
        gaps=tuple(gaps),
        duplicates=tuple(DuplicateSlot(t, counts[t]) for t in opens if counts[t] > 1),
        misaligned_candles=sum(c for t, c in counts.items() if t not in open_set),
        newest_ms=max(present, default=None),
    )


class TestEdges:
    """Empty series, window edges and single-slot windows."""

    def test_empty_series(self) -> None:
        """No documents yields one gap over the whole window and no newest."""
        result = scan(ONE_MIN, Window(T0, T0 + 10 * M), [])
        assert result == SeriesScan(
            Window(T0, T0 + 10 * M), 10, 0, (Gap(T0, T0 + 10 * M, 10),), (), 0, None
        )

    def test_gaps_at_both_edges(self) -> None:
        """Missing runs touching the window start and end are both reported."""
        result = scan(ONE_MIN, Window(T0, T0 + 10 * M), minutes(2, 3, 4, 5, 6))
        assert result.gaps == (Gap(T0, T0 + 2 * M, 2), Gap(T0 + 7 * M, T0 + 10 * M, 3))
        assert (result.expected_candles, result.present_candles) == (10, 5)
        assert result.newest_ms == T0 + 6 * M

    def test_unaligned_window_bounds(self) -> None:
        """An unaligned start begins at the next open; a trailing gap may end past window.end."""
        window = Window(T0 + 30_000, T0 + 5 * M + 30_000)
        result = scan(ONE_MIN, window, minutes(0, 2))
        assert result.expected_candles == 5
        assert result.present_candles == 1
        assert result.gaps == (Gap(T0 + M, T0 + 2 * M, 1), Gap(T0 + 3 * M, T0 + 6 * M, 3))

    def test_out_of_window_ignored(self) -> None:
        """Documents before start or at/after end change nothing."""
        result = scan(ONE_MIN, Window(T0, T0 + 3 * M), minutes(-1, -1, 0, 1, 2, 3, 3))
        assert result == SeriesScan(Window(T0, T0 + 3 * M), 3, 3, (), (), 0, T0 + 2 * M)

    def test_one_slot_present(self) -> None:
        """A one-slot window holding its document is complete."""
        result = scan(ONE_MIN, Window(T0, T0 + M), [T0])
        assert result == SeriesScan(Window(T0, T0 + M), 1, 1, (), (), 0, T0)

    def test_one_slot_missing(self) -> None:
        """A one-slot window without its document is one one-candle gap."""
        result = scan(ONE_MIN, Window(T0, T0 + M), [T0 - M, T0 + M])
        assert result.gaps == (Gap(T0, T0 + M, 1),)
        assert (result.expected_candles, result.present_candles, result.newest_ms) == (1, 0, None)

    def test_one_slot_unaligned_bounds(self) -> None:
        """A one-ms-shifted window still expects exactly the one open inside it."""
        result = scan(ONE_MIN, Window(T0 + 1, T0 + M + 1), [T0, T0 + M])
        assert (result.expected_candles, result.present_candles, result.gaps) == (1, 1, ())

    def test_empty_window(self) -> None:
        """A window with end <= start expects nothing and reports nothing."""
        for window in (Window(T0, T0), Window(T0 + M, T0)):
            assert scan(ONE_MIN, window, minutes(0, 1)) == SeriesScan(window, 0, 0, (), (), 0, None)


class TestMisalignedAndDuplicates:
    """Misaligned documents and duplicate slots, including at gap boundaries."""

    def test_misaligned_never_fills_gap(self) -> None:
        """A document inside a missing slot is misaligned, not present, and not a duplicate."""
        docs = [T0, T0 + M + 1, T0 + M + 1, T0 + 2 * M]
        result = scan(ONE_MIN, Window(T0, T0 + 3 * M), docs)
        assert result.misaligned_candles == 2
        assert result.gaps == (Gap(T0 + M, T0 + 2 * M, 1),)
        assert result.duplicates == ()

    def test_duplicate_right_after_gap(self) -> None:
        """A duplicated slot that closes a gap is both the gap's end and a duplicate."""
        result = scan(ONE_MIN, Window(T0, T0 + 5 * M), minutes(0, 3, 3, 4))
        assert result.gaps == (Gap(T0 + M, T0 + 3 * M, 2),)
        assert result.duplicates == (DuplicateSlot(T0 + 3 * M, 2),)
        assert result.present_candles == 3

    def test_duplicate_right_before_gap(self) -> None:
        """A duplicated slot just before a gap and one at the window's last slot are reported."""
        result = scan(ONE_MIN, Window(T0, T0 + 6 * M), minutes(0, 1, 1, 1, 5, 5))
        assert result.gaps == (Gap(T0 + 2 * M, T0 + 5 * M, 3),)
        assert result.duplicates == (DuplicateSlot(T0 + M, 3), DuplicateSlot(T0 + 5 * M, 2))
        assert result.surplus_documents == 3

    def test_unsorted_rejected(self) -> None:
        """A decreasing aligned timestamp raises ValueError instead of miscounting."""
        with pytest.raises(ValueError):
            scan(ONE_MIN, Window(T0, T0 + 5 * M), minutes(2, 1))

    def test_finish_is_repeatable(self) -> None:
        """finish() leaves the scanner unchanged, so feeding may continue."""
        scanner = SeriesScanner(ONE_MIN, Window(T0, T0 + 4 * M))
        scanner.feed(minutes(0, 1, 1))
        assert scanner.finish() == scanner.finish()
        scanner.feed(minutes(1, 3))
        assert scanner.finish().duplicates == (DuplicateSlot(T0 + M, 3),)
        assert scanner.finish().gaps == (Gap(T0 + 2 * M, T0 + 3 * M, 1),)


class TestCalendarTimeframes:
    """Scans on 3d, 1w and 1M use their own alignment rules."""

    def test_3d(self) -> None:
        """3d slots are epoch multiples; a 1d-aligned document between them is misaligned."""
        tf = parse_timeframe("3d")
        step = 259_200_000
        base = tf.floor(T0)
        window = Window(base, base + 4 * step)
        result = scan(tf, window, [base, base + DAY, base + 3 * step])
        assert result.misaligned_candles == 1
        assert result.gaps == (Gap(base + step, base + 3 * step, 2),)

    def test_1w(self) -> None:
        """1w slots open on Mondays; a Sunday document is misaligned."""
        tf = parse_timeframe("1w")
        window = Window(ms(2024, 1, 1), ms(2024, 1, 29))
        docs = [ms(2024, 1, 1), ms(2024, 1, 14), ms(2024, 1, 22), ms(2024, 1, 22)]
        result = scan(tf, window, docs)
        assert result.expected_candles == 4
        assert result.misaligned_candles == 1
        assert result.gaps == (Gap(ms(2024, 1, 8), ms(2024, 1, 22), 2),)
        assert result.duplicates == (DuplicateSlot(ms(2024, 1, 22), 2),)

    def test_month_across_year_and_leap_february(self) -> None:
        """1M gaps span December to January and a 29-day February by calendar months."""
        tf = parse_timeframe("1M")
        window = Window(ms(2023, 11, 1), ms(2024, 4, 1))
        docs = [ms(2023, 11, 1), ms(2023, 12, 1), ms(2023, 12, 1), ms(2024, 1, 15), ms(2024, 3, 1)]
        result = scan(tf, window, docs)
        assert result == SeriesScan(
            window=window,
            expected_candles=5,
            present_candles=3,
            gaps=(Gap(ms(2024, 1, 1), ms(2024, 3, 1), 2),),
            duplicates=(DuplicateSlot(ms(2023, 12, 1), 2),),
            misaligned_candles=1,
            newest_ms=ms(2024, 3, 1),
        )

    def test_month_trailing_gap(self) -> None:
        """A 1M trailing gap on an unaligned end ends at the month after the last missing one."""
        tf = parse_timeframe("1M")
        window = Window(ms(2023, 12, 1), ms(2024, 2, 10))
        result = scan(tf, window, [ms(2023, 12, 1)])
        assert result.gaps == (Gap(ms(2024, 1, 1), ms(2024, 3, 1), 2),)

    def test_before_epoch(self) -> None:
        """Scans of pre-1970 hourly series align with floor semantics."""
        tf = parse_timeframe("1h")
        h = 3_600_000
        result = scan(tf, Window(-3 * h - 1, h), [-3 * h, -h, -h + 1, 0])
        assert result.expected_candles == 4
        assert result.gaps == (Gap(-2 * h, -h, 1),)
        assert result.misaligned_candles == 1


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Timeframe, Window, list[int], list[int]]:
    tf = parse_timeframe(draw(st.sampled_from(["1m", "1h", "3d", "1w", "1M"])))
    anchor = tf.floor(draw(st.integers(-(10**12), 2 * 10**12)))
    n = draw(st.integers(0, 10))
    jitter = st.sampled_from([0, 0, 1, -1, 30_000])
    window = Window(anchor + draw(jitter), tf.shift(anchor, n) + draw(jitter))
    candidates = [tf.shift(anchor, k) for k in range(-2, n + 3)]
    aligned = draw(st.lists(st.sampled_from(candidates), max_size=40))
    misaligned = [
        t + draw(st.integers(1, 59_999))
        for t in draw(st.lists(st.sampled_from(candidates), max_size=6))
    ]
    timestamps = sorted(aligned + misaligned)
    cuts = sorted(draw(st.lists(st.integers(0, len(timestamps)), max_size=5)))
    return tf, window, timestamps, cuts


class TestBatching:
    """Any batching of the input matches a brute-force model of the whole series."""

    @settings(max_examples=300, deadline=None)
    @given(scenarios())
    def test_matches_reference(self, case: tuple[Timeframe, Window, list[int], list[int]]) -> None:
        """Feeding arbitrary consecutive batches equals the reference scan of all timestamps."""
        tf, window, timestamps, cuts = case
        scanner = SeriesScanner(tf, window)
        bounds = [0, *cuts, len(timestamps)]
        for lo, hi in itertools.pairwise(bounds):
            scanner.feed(iter(timestamps[lo:hi]))
        expected = reference(tf, window, timestamps)
        assert scanner.finish() == expected
        assert scan(tf, window, timestamps) == expected


class TestGapCap:
    """max_gaps holds the newest gaps and counts every one, whatever the batching."""

    @given(
        present=st.lists(st.integers(0, 300), unique=True).map(sorted),
        cap=st.integers(1, 20),
        cut=st.integers(0, 300),
    )
    def test_newest_held_rest_counted(self, present: list[int], cap: int, cut: int) -> None:
        """Capped gaps are the uncapped scan's last `cap`; counts and missing stay exact."""
        tf = parse_timeframe("1m")
        window = Window(0, 300 * 60_000)
        stamps = [i * 60_000 for i in present]
        full = scan(tf, window, stamps)
        scanner = SeriesScanner(tf, window, max_gaps=cap)
        scanner.feed(stamps[:cut])
        scanner.feed(stamps[cut:])
        capped = scanner.finish()
        assert capped.gaps == full.gaps[-cap:]
        assert capped.gap_count == len(full.gaps)
        assert capped.missing_candles == full.missing_candles
        assert capped.dropped_gaps == max(0, len(full.gaps) - cap)
