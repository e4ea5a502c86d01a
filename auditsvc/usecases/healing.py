"""The healing pass: every backfill request reaches an outcome, and the cap
serves the worst gaps first. The leader runs it at the end of every cycle.

Each run, in order:
1. **Outcomes of live requests.** A request whose gap a cycle found FILLED is
   closed ``status: filled``. One whose gap shrank starts its BACKFILL_TIMEOUT
   again. One that left its gap unshrunk for BACKFILL_TIMEOUT is closed
   ``status: expired``; its gap is OPEN again after ``backoff_s`` or, after
   BACKFILL_MAX_ATTEMPTS requests, UNFILLABLE. A request whose gap is gone
   (it scrolled out of every window) expires the same way.
2. **Requests a writer closed.** A gap still BACKFILL_REQUESTED whose request a
   writer closed (``open: false``) without filling it is treated as in 1.
3. **New requests.** The cycle's OPEN gaps at least MIN_AUTO_BACKFILL_GAP long and
   past their backoff are requested worst first (severity, length, recency) while
   fewer than MAX_AUTO_BACKFILL_JOBS requests are live; the rest are counted as
   skipped in their series' report and metric.

Guarantees: every write is fenced with the cycle's epoch (a deposed leader's run
writes nothing), and a request and the gap it changes are written in one
transaction. The live-request count never exceeds the cap through this pass: one
run at a time (the cycle lock), counting before it writes.

Limits: at most SCAN_LIMIT live requests and requested gaps are judged per run
(the rest at the next). Writers outside the service that open requests are
counted against the cap but never judged by it beyond steps 1-2.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from auditsvc.domain.gap_lifecycle import (
    GapState,
    after_failure,
    backoff_s,
    priority,
)
from auditsvc.domain.records import BackfillRequest, LiveRequest, TrackedGap
from auditsvc.ops.clock import Clock
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import BackfillSettings
from auditsvc.storage.interfaces import BackfillStore, Fence

log = logging.getLogger(__name__)

# Live requests and requested gaps judged per run; the healthy number is the cap.
SCAN_LIMIT = 1000

Key = tuple[str, str]


@dataclass
class HealOutcome:
    """What one run did, by series where the cycle's reports need it."""

    requested: Counter[Key] = field(default_factory=Counter)
    skipped: Counter[Key] = field(default_factory=Counter)
    filled: int = 0
    expired: int = 0
    unfillable: int = 0


class Healer:
    def __init__(
        self,
        settings: BackfillSettings,
        clock: Clock,
        store: BackfillStore,
        fence: Fence,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._store = store
        self._fence = fence
        self._metrics = metrics
        # Timeframes the live-request gauge has shown, so each drops to 0 when drained.
        self._gauged: set[str] = set()

    async def heal(self, cycle_id: str, epoch: int) -> HealOutcome:
        """One run (see the module docstring); the caller holds the cycle lock."""
        out = HealOutcome()
        await self._report_fills(epoch)
        judged = await self._judge_live(epoch, out)
        await self._judge_closed(epoch, judged, out)
        if self._settings.enabled:
            await self._request(cycle_id, epoch, out)
        await self._gauge_live()
        if out.filled or out.expired or out.unfillable or out.requested:
            log.info(
                "backfill requests judged",
                extra={
                    "cycle_id": cycle_id,
                    "filled": out.filled,
                    "expired": out.expired,
                    "unfillable": out.unfillable,
                    "requested": sum(out.requested.values()),
                    "skipped": sum(out.skipped.values()),
                },
            )
        return out

    async def _report_fills(self, epoch: int) -> None:
        """Observes detection-to-fill of the gaps cycles found filled, once each."""
        fills = await self._store.unreported_fills(SCAN_LIMIT)
        if not fills:
            return
        await self._fence.write_fenced(
            epoch, functools.partial(self._store.mark_reported, [f.gap_id for f in fills])
        )
        for f in fills:
            took = max(0.0, (f.filled_ms - f.detected_ms) / 1000)
            self._metrics.gap_fill_seconds.labels(f.timeframe).observe(took)

    async def _gauge_live(self) -> None:
        live = await self._store.live_by_timeframe()
        for tf in self._gauged - live.keys():
            self._metrics.backfills_live.labels(tf).set(0)
        for tf, n in live.items():
            self._metrics.backfills_live.labels(tf).set(n)
        self._gauged |= live.keys()

    async def _judge_live(self, epoch: int, out: HealOutcome) -> set[str]:
        """Step 1; returns the ids of the requests it saw open."""
        requests = await self._store.live_requests(SCAN_LIMIT)
        gaps = await self._store.gaps_by_id([r.gap_id for r in requests]) if requests else {}
        now = self._clock.now_ms()
        timeout_ms = self._settings.timeout * 1000
        seen: set[str] = set()
        for r in requests:
            seen.add(r.request_id)
            gap = gaps.get(r.gap_id)
            if gap is not None and gap.backfill_request_id not in ("", r.request_id):
                gap = None  # the document tracks another incident now
            if gap is not None and gap.state is GapState.FILLED:
                await self._close_filled(r, epoch, now, out)
            elif gap is not None and r.missing_candles and gap.missing_candles < r.missing_candles:
                await self._fence.write_fenced(
                    epoch,
                    functools.partial(self._store.progress, r.request_id, gap.missing_candles, now),
                )
            elif now - r.progress_ms >= timeout_ms:
                await self._expire(r, gap, epoch, now, out)
        return seen

    async def _close_filled(self, r: LiveRequest, epoch: int, now: int, out: HealOutcome) -> None:
        closed = await self._fence.write_fenced(
            epoch, lambda s: self._store.close_filled(r.request_id, now, s)
        )
        if closed:
            out.filled += 1
            log.info("backfill request filled", extra={"request_id": r.request_id})

    async def _expire(
        self, r: LiveRequest, gap: TrackedGap | None, epoch: int, now: int, out: HealOutcome
    ) -> None:
        async def work(session: object) -> bool:
            closed = await self._store.expire(r.request_id, now, session)
            if closed and gap is not None:
                await self._release(gap, r.request_id, now, out, session)
            return closed

        if await self._fence.write_fenced(epoch, work):
            out.expired += 1
            self._metrics.backfills_expired.labels(r.timeframe).inc()
            log.info(
                "backfill request expired",
                extra={"request_id": r.request_id, "gap_id": r.gap_id},
            )

    async def _release(
        self, gap: TrackedGap, request_id: str, now: int, out: HealOutcome, session: object
    ) -> None:
        """The gap's request ended unfilled: OPEN after its backoff, or UNFILLABLE."""
        state = after_failure(gap.attempts, self._settings.max_attempts)
        wait_ms = backoff_s(self._settings.timeout, gap.attempts) * 1000
        expires = (
            now + self._settings.history_retention * 1000 if state is GapState.UNFILLABLE else None
        )
        await self._store.release(gap.gap_id, request_id, state, now + wait_ms, expires, session)
        if state is GapState.UNFILLABLE:
            out.unfillable += 1
            self._metrics.gaps_unfillable.labels(gap.timeframe).inc()
            log.warning(
                "gap unfillable: no more backfill requests",
                extra={"gap_id": gap.gap_id, "attempts": gap.attempts},
            )

    async def _judge_closed(self, epoch: int, open_ids: set[str], out: HealOutcome) -> None:
        """Step 2: requested gaps whose request a writer closed without filling them."""
        gaps = [
            g
            for g in await self._store.requested_gaps(SCAN_LIMIT)
            if g.backfill_request_id not in open_ids
        ]
        if not gaps:
            return
        still_open = await self._store.open_among([g.backfill_request_id for g in gaps])
        now = self._clock.now_ms()
        for gap in gaps:
            if gap.backfill_request_id in still_open:
                continue  # beyond this run's SCAN_LIMIT; judged at a later run
            await self._fence.write_fenced(
                epoch, functools.partial(self._release, gap, gap.backfill_request_id, now, out)
            )

    async def _request(self, cycle_id: str, epoch: int, out: HealOutcome) -> None:
        """Step 3: the worst of the cycle's OPEN gaps, while the cap allows."""
        free = self._settings.max_jobs - await self._store.open_count()
        now = self._clock.now_ms()
        min_ms = self._settings.min_gap * 1000
        async for gap in self._store.candidates(cycle_id, min_ms, now):
            key = (gap.symbol, gap.timeframe)
            if free <= 0:
                out.skipped[key] += 1
                self._metrics.backfills_skipped.labels(*key).inc()
                continue
            req = BackfillRequest(
                request_id=f"bf-{uuid.uuid4().hex}",
                symbol=gap.symbol,
                timeframe=gap.timeframe,
                start_ms=gap.start_ms,
                end_ms=gap.end_ms,
                priority=priority(gap.severity),
                epoch=epoch,
                gap_id=gap.gap_id,
                missing_candles=gap.missing_candles,
                created_ms=now,
            )
            made = await self._fence.write_fenced(
                epoch, functools.partial(self._store.request, req, gap.attempts + 1)
            )
            if made == req.request_id:
                free -= 1
                out.requested[key] += 1
                self._metrics.backfills_triggered.labels(*key, gap.severity.value).inc()
