"""One streaming pass over a series' sorted timestamps: gaps, duplicates, counts.

Guarantees:

* Memory is O(gaps + duplicate slots): timestamps are consumed one at a time
  and never stored, so a series of any length can be scanned in batches.
* Splitting the input into batches at any points gives the same result as one
  batch.
* Fixed timeframes use integer arithmetic only in the per-timestamp loop; ``1M``
  does calendar arithmetic once per month seen, not once per timestamp.
* Timestamps outside ``[window.start_ms, window.end_ms)`` are ignored; a
  timestamp that is not a slot open time is counted as misaligned and never
  fills a gap nor counts as a duplicate.

Limits: aligned timestamps must arrive in ascending order (across batches
too); a decrease raises ValueError, after which the scanner must be discarded.
The order of misaligned timestamps is not checked.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditsvc.domain.timeframes import Timeframe
from auditsvc.domain.values import DuplicateSlot, Gap, SeriesScan, Window


class SeriesScanner:
    """Accumulates one series' scan over consecutive :meth:`feed` calls."""

    __slots__ = (
        "_count",
        "_dups",
        "_gaps",
        "_last",
        "_misaligned",
        "_next",
        "_present",
        "_slot_next",
        "_slot_open",
        "_tf",
        "_window",
    )

    def __init__(self, tf: Timeframe, window: Window) -> None:
        self._tf = tf
        self._window = window
        # First expected open time not yet seen; everything before it is settled.
        self._next = tf.ceil(window.start_ms)
        # Last aligned slot seen and how many documents it holds so far. Any value
        # below the window start works as "none yet" and keeps the loop int-only.
        self._last = window.start_ms - 1
        self._count = 0
        self._present = 0
        self._misaligned = 0
        self._gaps: list[Gap] = []
        self._dups: list[DuplicateSlot] = []
        # 1M only: bounds of the calendar slot of the previous timestamp, so the
        # datetime arithmetic runs once per month rather than once per document.
        self._slot_open = 0
        self._slot_next = 0

    def feed(self, timestamps: Iterable[int]) -> None:
        """Consume the next batch of ascending timestamps (ms)."""
        if self._tf.fixed_ms is None:
            self._feed_calendar(timestamps)
        else:
            self._feed_fixed(timestamps, self._tf.fixed_ms)

    def _feed_fixed(self, timestamps: Iterable[int], step: int) -> None:
        # Hot path: state lives in locals for the loop and is written back after.
        start, end, off = self._window.start_ms, self._window.end_ms, self._tf.offset_ms
        nxt, last, count = self._next, self._last, self._count
        present, misaligned = self._present, self._misaligned
        add_gap, add_dup = self._gaps.append, self._dups.append
        for t in timestamps:
            if not start <= t < end:
                continue
            if (t - off) % step:
                misaligned += 1
                continue
            if t == last:
                count += 1
                continue
            if count > 1:
                add_dup(DuplicateSlot(last, count))
            if t != nxt:
                if t < nxt:
                    raise ValueError(f"timestamps not ascending: {t} after {last}")
                add_gap(Gap(nxt, t, (t - nxt) // step))
            present += 1
            last = t
            count = 1
            nxt = t + step
        self._next, self._last, self._count = nxt, last, count
        self._present, self._misaligned = present, misaligned

    def _feed_calendar(self, timestamps: Iterable[int]) -> None:
        tf = self._tf
        start, end = self._window.start_ms, self._window.end_ms
        nxt, last, count = self._next, self._last, self._count
        present, misaligned = self._present, self._misaligned
        slot_open, slot_next = self._slot_open, self._slot_next
        add_gap, add_dup = self._gaps.append, self._dups.append
        for t in timestamps:
            if not start <= t < end:
                continue
            if not slot_open <= t < slot_next:
                slot_open = tf.floor(t)
                slot_next = tf.next_open(slot_open)
            if t != slot_open:
                misaligned += 1
                continue
            if t == last:
                count += 1
                continue
            if count > 1:
                add_dup(DuplicateSlot(last, count))
            if t != nxt:
                if t < nxt:
                    raise ValueError(f"timestamps not ascending: {t} after {last}")
                add_gap(Gap(nxt, t, tf.count_slots(nxt, t)))
            present += 1
            last = t
            count = 1
            nxt = slot_next
        self._next, self._last, self._count = nxt, last, count
        self._present, self._misaligned = present, misaligned
        self._slot_open, self._slot_next = slot_open, slot_next

    def finish(self) -> SeriesScan:
        """The scan of everything fed so far. Does not change the scanner."""
        tf, window = self._tf, self._window
        dups = list(self._dups)
        if self._count > 1:
            dups.append(DuplicateSlot(self._last, self._count))
        gaps = list(self._gaps)
        if self._next < window.end_ms:
            # The trailing run ends just after the last expected slot, which may
            # be at or past window.end when the window end is unaligned.
            gaps.append(
                Gap(
                    self._next,
                    tf.next_open(window.end_ms - 1),
                    tf.count_slots(self._next, window.end_ms),
                )
            )
        return SeriesScan(
            window=window,
            expected_candles=tf.count_slots(window.start_ms, window.end_ms),
            present_candles=self._present,
            gaps=tuple(gaps),
            duplicates=tuple(dups),
            misaligned_candles=self._misaligned,
            newest_ms=self._last if self._present else None,
        )


def scan(tf: Timeframe, window: Window, timestamps: Iterable[int]) -> SeriesScan:
    """Scan one batch of ascending timestamps; see :class:`SeriesScanner`."""
    scanner = SeriesScanner(tf, window)
    scanner.feed(timestamps)
    return scanner.finish()
