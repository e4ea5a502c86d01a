"""The live tail's side of healing: a requested gap whose slots have all arrived
is FILLED within a poll, without waiting for the next cycle.

Each pass (at most every ``CHECK_EVERY_S``) reads the gaps in
BACKFILL_REQUESTED — as many as there are live requests, MAX_AUTO_BACKFILL_JOBS
by default — and scans each one's own range. One found whole is marked FILLED
(``filled_at``, kept GAP_HISTORY_RETENTION) and its request closed
``status: filled``, in one fenced transaction.

Limits: only requested gaps are watched (any other fill is seen by the next
cycle), and a partly filled gap is left to the cycle, which keeps its identity
for the rest (``storage/mongo/gap_writes.py``). At most SCAN_LIMIT gaps per pass.
"""

from __future__ import annotations

import logging

from auditsvc.domain.records import TrackedGap
from auditsvc.domain.scanner import SeriesScanner
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.values import Window
from auditsvc.ops.clock import Clock
from auditsvc.ops.settings import BackfillSettings
from auditsvc.storage.interfaces import BackfillStore, CandleStore, Fence

log = logging.getLogger(__name__)

# A fill is seen within this, plus one poll: the bench's target is 1.5 s.
CHECK_EVERY_S = 0.5
SCAN_LIMIT = 100


class FillWatch:
    def __init__(
        self,
        settings: BackfillSettings,
        clock: Clock,
        candles: CandleStore,
        store: BackfillStore,
        fence: Fence,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._candles = candles
        self._store = store
        self._fence = fence
        self._checked_at = float("-inf")

    async def check(self, epoch: int) -> int:
        """One pass, when due; returns how many gaps it marked FILLED."""
        now = self._clock.monotonic()
        if now - self._checked_at < CHECK_EVERY_S:
            return 0
        self._checked_at = now
        filled = 0
        for gap in await self._store.requested_gaps(SCAN_LIMIT):
            if await self._whole(gap):
                filled += await self._mark(gap, epoch)
        return filled

    async def _whole(self, gap: TrackedGap) -> bool:
        tf = parse_timeframe(gap.timeframe)
        window = Window(gap.start_ms, gap.end_ms)
        scanner = SeriesScanner(tf, window)
        async for batch in self._candles.timestamps(gap.symbol, tf.name, window):
            scanner.feed(batch)
        found = scanner.finish()
        return found.expected_candles > 0 and not found.gaps and not found.dropped_gaps

    async def _mark(self, gap: TrackedGap, epoch: int) -> int:
        retention_ms = self._settings.history_retention * 1000

        async def work(session: object) -> bool:
            marked = await self._store.mark_filled(gap.gap_id, retention_ms, session)
            if marked and gap.backfill_request_id:
                now = self._clock.now_ms()
                await self._store.close_filled(gap.backfill_request_id, now, session)
            return marked

        if not await self._fence.write_fenced(epoch, work):
            return 0
        log.info(
            "requested gap filled (live)",
            extra={"gap_id": gap.gap_id, "request_id": gap.backfill_request_id},
        )
        return 1
