"""The live tail's side of healing: a requested gap whose slots have all arrived
is FILLED within a poll, without waiting for the next cycle.

The live tail runs :meth:`FillWatch.run` beside its passes, so a check starts
every ``CHECK_EVERY_S`` whatever a pass or its sleep takes. Each check reads the
gaps in BACKFILL_REQUESTED — as many as there are live requests,
MAX_AUTO_BACKFILL_JOBS by default — and scans each one's own range. Those found
whole are marked FILLED (``filled_at``, kept GAP_HISTORY_RETENTION) and their
requests closed ``status: filled``, all in one fenced transaction per check.

Limits: only requested gaps are watched (any other fill is seen by the next
cycle), and a partly filled gap is left to the cycle, which keeps its identity
for the rest (``storage/mongo/gap_writes.py``). At most SCAN_LIMIT gaps per pass.
"""

from __future__ import annotations

import asyncio
import logging

from auditsvc.domain.errors import Fenced, NotLeader
from auditsvc.domain.records import TrackedGap
from auditsvc.domain.scanner import SeriesScanner
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.domain.values import Window
from auditsvc.ops.clock import Clock
from auditsvc.ops.settings import BackfillSettings
from auditsvc.storage.interfaces import BackfillStore, CandleStore, Fence

log = logging.getLogger(__name__)

# A fill is seen within this plus one check (figure 17's target is 1.5 s).
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

    async def run(self, epoch: int) -> None:
        """Checks every ``CHECK_EVERY_S`` until cancelled (the tail's term ends); a
        failed check is retried at the next one, a refused fence ends the run."""
        while True:
            try:
                await self.check(epoch)
            except (Fenced, NotLeader):
                raise
            except Exception as exc:  # the next check retries; the cycle also sees fills
                log.warning("fill check failed", extra={"reason": type(exc).__name__})
            await asyncio.sleep(CHECK_EVERY_S)

    async def check(self, epoch: int) -> int:
        """One check; returns how many gaps it marked FILLED. ``run`` paces them."""
        whole = [g for g in await self._store.requested_gaps(SCAN_LIMIT) if await self._whole(g)]
        if not whole:
            return 0
        return await self._mark(whole, epoch)

    async def _whole(self, gap: TrackedGap) -> bool:
        tf = parse_timeframe(gap.timeframe)
        window = Window(gap.start_ms, gap.end_ms)
        scanner = SeriesScanner(tf, window)
        async for batch in self._candles.timestamps(gap.symbol, tf.name, window):
            scanner.feed(batch)
        found = scanner.finish()
        return found.expected_candles > 0 and not found.gaps and not found.dropped_gaps

    async def _mark(self, gaps: list[TrackedGap], epoch: int) -> int:
        """Marks ``gaps`` FILLED and closes their requests in one fenced batch."""
        retention_ms = self._settings.history_retention * 1000

        async def work(session: object) -> list[TrackedGap]:
            marked = []
            for gap in gaps:
                if await self._store.mark_filled(gap.gap_id, retention_ms, session):
                    marked.append(gap)
                    if gap.backfill_request_id:
                        now = self._clock.now_ms()
                        await self._store.close_filled(gap.backfill_request_id, now, session)
            return marked

        marked = await self._fence.write_fenced(epoch, work)
        for gap in marked:
            log.info(
                "requested gap filled (live)",
                extra={"gap_id": gap.gap_id, "request_id": gap.backfill_request_id},
            )
        return len(marked)
