"""Incremental audits: what a series' last default-window audit settled, and how the
next one reads only what can have changed yet finds what a full scan would.

A :class:`Settled` record is what one audit of window ``W = [s, e)`` found: every
gap (never capped), the duplicate slots and the misaligned timestamps. ``e`` is
the *watermark*. The next default window ``W' = [s', e')`` (``s <= s'``,
``e <= e'``) is then read only in these ranges (:func:`plan`):

* the *tail* ``[max(s', floor(e - recheck)), e')``: the slots after the
  watermark and a recheck horizon for late corrections;
* each settled gap, clipped to ``W'`` and to before the tail, to see whether a
  backfill filled it.

Everything else in ``W'`` (the *solid* ranges) was complete at the last audit,
and :class:`IncrementalScan` replays it from the record instead of reading it.

Guarantee (the contract the property test checks): when the documents in the
solid ranges are the same as when the record was made, the result equals a full
scan of ``W'`` (the same :class:`~auditsvc.domain.values.SeriesScan`). Changes a
read range covers (inserts, deletions, backfills, late duplicates, misaligned
candles in the tail or in a gap) are always seen.

Limits: a deletion or a late duplicate older than the recheck horizon and outside
every gap is not seen until the next full scan, which :func:`plan` schedules
every ``full_every`` audits, and whenever the record cannot vouch for the window:
none stored, its window does not overlap or moved backwards, it lost gaps to the
cap, or it holds too many misaligned timestamps to keep.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from auditsvc.domain.scanner import SeriesScanner
from auditsvc.domain.timeframes import Timeframe
from auditsvc.domain.values import DuplicateSlot, Gap, SeriesScan, Window


@dataclass(frozen=True, slots=True)
class Settled:
    """What one default-window audit of a series found; see the module docstring."""

    window: Window
    gaps: tuple[Gap, ...]
    duplicates: tuple[DuplicateSlot, ...]
    misaligned: tuple[int, ...]
    # Incremental audits since the last full scan (0 right after a full scan).
    since_full: int

    @property
    def watermark_ms(self) -> int:
        return self.window.end_ms


@dataclass(frozen=True, slots=True)
class Plan:
    """What to read for one series: ``reads`` ascending and disjoint, inside ``window``.

    ``settled`` is None for a full scan (``reads`` is the whole window)."""

    window: Window
    reads: tuple[Window, ...]
    settled: Settled | None

    @property
    def full(self) -> bool:
        return self.settled is None


def plan(
    tf: Timeframe, window: Window, settled: Settled | None, recheck_ms: int, full_every: int
) -> Plan:
    """The ranges to read for ``window`` given the series' last record."""
    full = Plan(window, (window,), None)
    if settled is None or settled.since_full + 1 >= full_every:
        return full
    old = settled.window
    if not (old.start_ms <= window.start_ms < old.end_ms <= window.end_ms):
        return full
    if tf.floor(window.start_ms) != window.start_ms or tf.floor(old.end_ms) != old.end_ms:
        return full
    tail_start = max(window.start_ms, tf.floor(old.end_ms - recheck_ms))
    reads: list[Window] = []
    for gap in settled.gaps:
        start, end = max(gap.start_ms, window.start_ms), min(gap.end_ms, tail_start)
        if start < end:
            reads.append(Window(start, end))
    reads.append(Window(tail_start, window.end_ms))
    return Plan(window, tuple(reads), settled)


class IncrementalScan:
    """Scans a :class:`Plan`: feed it the timestamps of its reads, ascending.

    Timestamps outside the reads are ignored (a shared query may return more).
    """

    def __init__(self, tf: Timeframe, p: Plan, max_gaps: int | None = None) -> None:
        self._plan = p
        self._scanner = SeriesScanner(tf, p.window, max_gaps)
        self._settled = p.settled
        # Solid ranges not yet replayed, ascending: the gaps between reads.
        self._solid: list[Window] = []
        cursor = p.window.start_ms
        for read in p.reads:
            if cursor < read.start_ms:
                self._solid.append(Window(cursor, read.start_ms))
            cursor = read.end_ms
        self._solid.reverse()  # pop() from the end takes the earliest
        self._read_starts = [r.start_ms for r in p.reads]

    def _in_reads(self, t: int) -> bool:
        i = bisect.bisect_right(self._read_starts, t) - 1
        return i >= 0 and t < self._plan.reads[i].end_ms

    def feed(self, timestamps: Iterable[int]) -> None:
        solid = self._solid
        for t in timestamps:
            if not self._in_reads(t):
                continue
            while solid and solid[-1].start_ms <= t:
                self._replay(solid.pop())
            self._scanner.feed((t,))

    def _replay(self, part: Window) -> None:
        settled = self._settled
        assert settled is not None  # a full plan has no solid range
        dups = [d for d in settled.duplicates if part.start_ms <= d.timestamp_ms < part.end_ms]
        odd = [t for t in settled.misaligned if part.start_ms <= t < part.end_ms]
        self._scanner.feed_settled(part.start_ms, part.end_ms, dups, odd)

    def finish(self) -> SeriesScan:
        while self._solid:
            self._replay(self._solid.pop())
        return self._scanner.finish()


def settle(scan: SeriesScan, p: Plan) -> Settled | None:
    """The record to keep after scanning ``p``; None when it could not vouch for a
    later window (gaps dropped by the cap, misaligned timestamps not kept)."""
    if scan.dropped_gaps or scan.misaligned_at is None:
        return None
    since = 0 if p.settled is None else p.settled.since_full + 1
    return Settled(scan.window, scan.gaps, scan.duplicates, scan.misaligned_at, since)
