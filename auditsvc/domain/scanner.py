"""One streaming pass over a series' sorted timestamps: gaps, duplicates, counts.

Guarantees:

* Memory is O(gaps + duplicate slots): timestamps are consumed one at a time
  and never stored, so a series of any length can be scanned in batches. With
  ``max_gaps`` only the newest ``max_gaps`` gaps are held; the older ones are
  counted (``SeriesScan.dropped_gaps``), so memory is O(max_gaps + duplicate
  slots) however long the history. Missing-candle counts stay exact.
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

from collections import deque
from collections.abc import Iterable, Sequence

from auditsvc.domain.timeframes import Timeframe
from auditsvc.domain.values import DuplicateSlot, Gap, SeriesScan, Window

# Misaligned timestamps a scan keeps by position; beyond this only their count.
MAX_MISALIGNED_KEPT = 1000


class SeriesScanner:
    """Accumulates one series' scan over consecutive :meth:`feed` calls."""

    __slots__ = (
        "_count",
        "_dups",
        "_gaps",
        "_gaps_seen",
        "_last",
        "_max_gaps",
        "_misaligned",
        "_misaligned_at",
        "_next",
        "_present",
        "_slot_next",
        "_slot_open",
        "_tf",
        "_window",
    )

    def __init__(self, tf: Timeframe, window: Window, max_gaps: int | None = None) -> None:
        self._tf = tf
        self._window = window
        self._max_gaps = max_gaps
        # First expected open time not yet seen; everything before it is settled.
        self._next = tf.ceil(window.start_ms)
        # Last aligned slot seen and how many documents it holds so far. Any value
        # below the window start works as "none yet" and keeps the loop int-only.
        self._last = window.start_ms - 1
        self._count = 0
        self._present = 0
        self._misaligned = 0
        # Misaligned timestamps, kept up to MAX_MISALIGNED_KEPT (incremental cycles
        # need their positions); None once more were seen.
        self._misaligned_at: list[int] | None = []
        # A bounded deque drops the oldest gap as a newer one is appended.
        self._gaps: deque[Gap] = deque(maxlen=max_gaps)
        self._gaps_seen = 0
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
        seen = self._gaps_seen
        for t in timestamps:
            if not start <= t < end:
                continue
            if (t - off) % step:
                misaligned += 1
                self._keep_misaligned(t)
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
                seen += 1
            present += 1
            last = t
            count = 1
            nxt = t + step
        self._next, self._last, self._count = nxt, last, count
        self._present, self._misaligned = present, misaligned
        self._gaps_seen = seen

    def _feed_calendar(self, timestamps: Iterable[int]) -> None:
        tf = self._tf
        start, end = self._window.start_ms, self._window.end_ms
        nxt, last, count = self._next, self._last, self._count
        present, misaligned = self._present, self._misaligned
        slot_open, slot_next = self._slot_open, self._slot_next
        add_gap, add_dup = self._gaps.append, self._dups.append
        seen = self._gaps_seen
        for t in timestamps:
            if not start <= t < end:
                continue
            if not slot_open <= t < slot_next:
                slot_open = tf.floor(t)
                slot_next = tf.next_open(slot_open)
            if t != slot_open:
                misaligned += 1
                self._keep_misaligned(t)
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
                seen += 1
            present += 1
            last = t
            count = 1
            nxt = slot_next
        self._next, self._last, self._count = nxt, last, count
        self._present, self._misaligned = present, misaligned
        self._gaps_seen = seen
        self._slot_open, self._slot_next = slot_open, slot_next

    def _keep_misaligned(self, t: int) -> None:
        kept = self._misaligned_at
        if kept is not None:
            kept.append(t)
            if len(kept) > MAX_MISALIGNED_KEPT:
                self._misaligned_at = None

    def feed_settled(
        self,
        start_ms: int,
        end_ms: int,
        duplicates: Iterable[DuplicateSlot],
        misaligned: Sequence[int],
    ) -> None:
        """Consume ``[start_ms, end_ms)`` as known from an earlier scan, without reading it.

        Every slot opening in the range is present, once unless ``duplicates``
        (those inside the range) says otherwise, and ``misaligned`` are the
        misaligned timestamps inside it. Both bounds must be slot open times at or
        after every timestamp fed so far. The result is the one feeding those
        documents' timestamps would give, at a cost independent of the range's length.
        """
        if start_ms >= end_ms:
            return
        tf = self._tf
        if self._next > start_ms:
            raise ValueError(f"settled range starts at {start_ms}, before {self._next}")
        if self._count > 1:
            self._dups.append(DuplicateSlot(self._last, self._count))
        if self._next < start_ms:
            self._gaps.append(Gap(self._next, start_ms, tf.count_slots(self._next, start_ms)))
            self._gaps_seen += 1
        last_slot = tf.floor(end_ms - 1)
        pending = 1
        for dup in duplicates:
            if dup.timestamp_ms == last_slot:
                pending = dup.count
            else:
                self._dups.append(dup)
        self._present += tf.count_slots(start_ms, end_ms)
        self._last, self._count, self._next = last_slot, pending, end_ms
        self._misaligned += len(misaligned)
        for t in misaligned:
            self._keep_misaligned(t)

    def finish(self) -> SeriesScan:
        """The scan of everything fed so far. Does not change the scanner."""
        tf, window = self._tf, self._window
        dups = list(self._dups)
        if self._count > 1:
            dups.append(DuplicateSlot(self._last, self._count))
        gaps = deque(self._gaps, maxlen=self._max_gaps)
        seen = self._gaps_seen
        if self._next < window.end_ms:
            seen += 1
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
            dropped_gaps=seen - len(gaps),
            misaligned_at=None if self._misaligned_at is None else tuple(self._misaligned_at),
        )


def scan(
    tf: Timeframe, window: Window, timestamps: Iterable[int], max_gaps: int | None = None
) -> SeriesScan:
    """Scan one batch of ascending timestamps; see :class:`SeriesScanner`."""
    scanner = SeriesScanner(tf, window, max_gaps)
    scanner.feed(timestamps)
    return scanner.finish()
