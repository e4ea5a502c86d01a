"""Incremental audits (auditsvc.domain.settled): the same result as a full scan."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from auditsvc.domain.scanner import SeriesScanner, scan
from auditsvc.domain.settled import IncrementalScan, Plan, Settled, plan, settle
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.values import DuplicateSlot, Gap, Window

M = 60_000
T0 = 1_704_067_200_000
TF = parse_timeframe("1m")
WINDOW_SLOTS = 40


def audit(
    docs: list[int], window: Window, last: Settled | None, recheck: int, every: int, cap: int | None
) -> tuple[Plan, Settled | None]:
    """One incremental audit over the documents; asserts it equals a full scan."""
    ordered = sorted(docs)
    full = scan(TF, window, ordered, cap)
    p = plan(TF, window, last, recheck, every)
    inc = IncrementalScan(TF, p, cap)
    inc.feed(ordered)
    got = inc.finish()
    assert got == full
    assert got.misaligned_at == full.misaligned_at
    assert got.dropped_gaps == full.dropped_gaps
    return p, settle(got, p)


@st.composite
def candle(draw: st.DrawFn, lo: int, hi: int) -> int:
    """An aligned candle (most often) or a misaligned one, opening in [lo, hi) slots."""
    slot = draw(st.integers(lo, hi - 1))
    offset = draw(st.sampled_from([0, 0, 0, 0, 1_000, 30_000]))
    return T0 + slot * M + offset


class TestIncrementalEqualsFull:
    """Randomized histories: an incremental audit always equals a full scan."""

    @settings(max_examples=200, deadline=None)
    @given(data=st.data())
    def test_random_histories(self, data: st.DataObject) -> None:
        """Inserts, deletions, backfills, late duplicates and misaligned candles in read ranges."""
        recheck = data.draw(st.integers(0, 6)) * M
        every = data.draw(st.integers(1, 6))
        cap = data.draw(st.sampled_from([None, None, 2]))
        end = WINDOW_SLOTS + data.draw(st.integers(0, 5))
        docs = data.draw(st.lists(candle(0, end), max_size=60))
        last: Settled | None = None
        for _ in range(data.draw(st.integers(1, 8))):
            window = Window(T0 + (end - WINDOW_SLOTS) * M, T0 + end * M)
            _, last = audit(docs, window, last, recheck, every, cap)
            # What may change before the next audit: anything from the recheck horizon
            # on, and anything inside a settled gap (a backfill).
            horizon = (end * M - recheck) // M
            step = data.draw(st.integers(0, 4))
            ranges = [(horizon, end + step)]
            if last is not None:
                ranges += [
                    ((g.start_ms - T0) // M, (g.end_ms - T0) // M)
                    for g in last.gaps
                    if g.end_ms > g.start_ms
                ]
            for _ in range(data.draw(st.integers(0, 6))):
                lo, hi = data.draw(st.sampled_from(ranges))
                if lo >= hi:
                    continue
                if docs and data.draw(st.booleans()):
                    inside = [d for d in docs if T0 + lo * M <= d < T0 + hi * M]
                    if inside:
                        docs.remove(data.draw(st.sampled_from(inside)))
                        continue
                docs.append(data.draw(candle(lo, hi)))
            end += step


class TestPlan:
    """What an incremental audit reads."""

    def test_reads_gaps_and_tail(self) -> None:
        """Only the settled gaps and the tail from the recheck horizon are read."""
        window = Window(T0, T0 + 100 * M)
        last = Settled(window, (Gap(T0 + 10 * M, T0 + 12 * M, 2),), (), (), 0)
        p = plan(TF, Window(T0 + 5 * M, T0 + 105 * M), last, 30 * M, 12)
        assert p.reads == (
            Window(T0 + 10 * M, T0 + 12 * M),
            Window(T0 + 70 * M, T0 + 105 * M),
        )

    def test_full_when_due_or_unusable(self) -> None:
        """Every full_every audits, with no record, or a window moved back: a full scan."""
        window = Window(T0, T0 + 100 * M)
        last = Settled(window, (), (), (), 11)
        assert plan(TF, Window(T0 + M, T0 + 101 * M), last, M, 12).full
        assert plan(TF, window, None, M, 12).full
        fresh = Settled(window, (), (), (), 0)
        assert plan(TF, Window(T0 - M, T0 + 99 * M), fresh, M, 12).full
        assert not plan(TF, Window(T0 + M, T0 + 101 * M), fresh, M, 12).full

    def test_fresh_deletion_seen(self) -> None:
        """A candle deleted inside the recheck horizon becomes a gap at the next audit."""
        docs = [T0 + i * M for i in range(100)]
        window = Window(T0, T0 + 100 * M)
        _, last = audit(docs, window, None, 10 * M, 12, None)
        docs.remove(T0 + 95 * M)
        p, _ = audit(docs, Window(T0 + M, T0 + 101 * M), last, 10 * M, 12, None)
        assert not p.full

    def test_backfilled_gap_disappears(self) -> None:
        """An old gap filled by a backfill, far before the horizon, is gone next audit."""
        docs = [T0 + i * M for i in range(100) if i not in (3, 4)]
        _, last = audit(docs, Window(T0, T0 + 100 * M), None, M, 12, None)
        assert last is not None and len(last.gaps) == 1
        docs += [T0 + 3 * M, T0 + 4 * M]
        _, after = audit(docs, Window(T0 + M, T0 + 101 * M), last, M, 12, None)
        assert after is not None and after.gaps == (Gap(T0 + 100 * M, T0 + 101 * M, 1),)


class TestFeedSettled:
    """Replaying a settled range equals feeding its documents."""

    def test_replay_equals_feed(self) -> None:
        """Duplicates (one at the range's last slot) and misaligned candles carry over."""
        window = Window(T0, T0 + 10 * M)
        docs = [T0, T0 + M, T0 + M, T0 + 2 * M, T0 + 2 * M + 5, T0 + 3 * M, T0 + 3 * M, T0 + 5 * M]
        a = SeriesScanner(TF, window)
        a.feed_settled(
            T0,
            T0 + 4 * M,
            [DuplicateSlot(T0 + M, 2), DuplicateSlot(T0 + 3 * M, 2)],
            [T0 + 2 * M + 5],
        )
        a.feed([T0 + 5 * M])
        assert a.finish() == scan(TF, window, sorted(docs))
