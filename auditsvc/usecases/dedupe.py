"""The ResolveDuplicates use case: find duplicate groups, decide which document
each keeps, archive the others whole and delete them, in fenced batches.

Nothing is deleted unless ENABLE_DUPLICATE_REMOVAL is on, dry_run is false and
the strategy is not manual. Re-running a request_id after a crash completes
the work: groups are recomputed from what is left, the archive key is
(request_id, collection, _id), and the choice of kept document is deterministic.

A removal deletes only what its reply shows, and never empties a slot: each
batch re-reads its groups' slots whole and skips a group in which anything
changed since the grouping (a copy edited, gone, moved or added), reported in
the reply (``groups_skipped`` and their timestamps), the batch's audit log
entry and the log. One removal runs per collection at a time: in this process they queue; with
ENABLE_LEADER_ELECTION=false (epoch 0, no fence to order replicas) a removal
also claims the collection in the database, and a second one from another
replica is refused with FAILED_PRECONDITION rather than left to decide from
the same snapshot with the opposite strategy. Under leadership the fence does
that job, and a claim left by a killed leader would only block its successor.

This module validates, orders and claims; one run's counters and its fenced
batches live in :class:`~auditsvc.usecases.removal.Removal`.

Each fenced batch is bounded in time as well as in count: its size adapts to
the durations measured (:class:`~auditsvc.domain.batch_sizing.AdaptiveBatch`), so a
renewal queued behind one batch waits about a quarter of a second, whatever
the size of the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from auditsvc.domain.errors import FailedPrecondition, InvalidArgument, NotFound, NotLeader
from auditsvc.domain.records import DuplicateReport
from auditsvc.domain.timeframes import Timeframe, default_window, parse_timeframe
from auditsvc.domain.values import CandleRef, Strategy, Window
from auditsvc.leadership.term import Leadership
from auditsvc.ops.clock import Clock
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import AuditSettings, DuplicateSettings
from auditsvc.storage.interfaces import CandleStore, DuplicateStore, Fence
from auditsvc.usecases.removal import CLAIM_TTL_MS, REPORTED_GROUPS, Removal

log = logging.getLogger(__name__)

# Slots per grouping query: one $group over a whole window is a single server
# command whose cost grows with the window (on a single-threaded server it
# held off the lease renewal for seconds); slices bound it.
SCAN_SLOTS = 250


class Deduplicator:
    def __init__(
        self,
        audit: AuditSettings,
        policy: DuplicateSettings,
        replica_id: str,
        clock: Clock,
        candles: CandleStore,
        duplicates: DuplicateStore,
        fence: Fence,
        leadership: Leadership,
        metrics: Metrics,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._failpoints = failpoints or Failpoints()
        # One removal per collection at a time: two requests deciding from the
        # same snapshot (say keep_newest and keep_oldest) could otherwise delete
        # every copy of a candle between them.
        self._locks: dict[str, asyncio.Lock] = {}
        self._audit = audit
        self._policy = policy
        self._replica_id = replica_id
        self._clock = clock
        self._candles = candles
        self._duplicates = duplicates
        self._fence = fence
        self._leadership = leadership
        self._metrics = metrics

    def validate(
        self, symbol: str, timeframe: str, start_ms: int | None, end_ms: int | None
    ) -> tuple[Timeframe, Window]:
        if not symbol:
            raise InvalidArgument("symbol is required", field="symbol")
        if symbol not in self._audit.symbols:
            raise NotFound(f"symbol {symbol!r} is not configured (AUDIT_SYMBOLS)", field="symbol")
        if not timeframe:
            raise InvalidArgument("timeframe is required", field="timeframe")
        tf = parse_timeframe(timeframe)
        if tf.name not in self._audit.timeframes:
            raise NotFound(f"timeframe {timeframe!r} is not configured", field="timeframe")
        default = default_window(
            tf, self._clock.now_ms(), self._audit.lookback, self._audit.min_candles
        )
        start = default.start_ms if start_ms is None else start_ms
        end = default.end_ms if end_ms is None else end_ms
        if start >= end:
            raise InvalidArgument("start_time must be before end_time", field="start_time")
        return tf, Window(start, end)

    async def resolve_duplicates(
        self,
        symbol: str,
        tf: Timeframe,
        window: Window,
        strategy: Strategy,
        dry_run: bool,
        request_id: str,
    ) -> DuplicateReport:
        term = self._leadership.term()
        if term is None:
            raise NotLeader("not leader", leader_address=self._leadership.last_known_address())
        removing = self._policy.removal_enabled and not dry_run and strategy is not Strategy.MANUAL
        collection = self._candles.collection(symbol, tf.name)
        owner = f"{self._replica_id}/{uuid.uuid4().hex}"
        lock = self._locks.setdefault(collection, asyncio.Lock())
        # Under leadership the fence already orders removals across replicas (and a
        # claim left by a killed leader would block its successor); epoch 0 has no fence.
        claim = removing and term.epoch == 0
        run = Removal(
            symbol=symbol,
            tf=tf,
            collection=collection,
            strategy=strategy,
            request_id=request_id,
            epoch=term.epoch,
            removing=removing,
            claim=claim,
            owner=owner,
            version_field=self._policy.version_field,
            fence=self._fence,
            duplicates=self._duplicates,
            metrics=self._metrics,
            failpoints=self._failpoints,
        )
        async with term.guard(), lock, self._claimed(collection, owner, claim):
            async for refs in self._groups(symbol, tf, window):
                await run.add(refs)
            await run.finish()
        return self._report(run, dry_run)

    def _report(self, run: Removal, dry_run: bool) -> DuplicateReport:
        """The reply of a finished run, logged."""
        skipped = run.skipped
        if skipped:
            log.warning(
                "duplicate groups changed during the removal; skipped",
                extra={
                    "request_id": run.request_id,
                    "collection": run.collection,
                    "skipped": len(skipped),
                    "skipped_timestamps": skipped[:REPORTED_GROUPS],
                },
            )
        log.info(
            "duplicates resolved",
            extra={
                "request_id": run.request_id,
                "groups": run.groups,
                "removed": run.removed,
                "skipped": len(skipped),
                "epoch": run.epoch,
            },
        )
        enabled = self._policy.removal_enabled
        return DuplicateReport(
            request_id=run.request_id,
            strategy=run.strategy,
            dry_run=dry_run,
            removal_enabled=enabled,
            duplicate_groups=run.groups,
            surplus_documents=run.surplus,
            documents_removed=run.removed,
            documents_archived=run.archived,
            served_by=self._replica_id,
            epoch=run.epoch,
            message=_message(enabled, dry_run, run.strategy, run.removed, len(skipped)),
            groups=tuple(run.reported),
            groups_skipped=len(skipped),
            skipped_timestamps=tuple(skipped[:REPORTED_GROUPS]),
        )

    async def _groups(
        self, symbol: str, tf: Timeframe, window: Window
    ) -> AsyncIterator[list[CandleRef]]:
        """Duplicate groups of ``window``, oldest first, scanned SCAN_SLOTS slots at a time."""
        step = SCAN_SLOTS * tf.nominal_ms
        start = window.start_ms
        while start < window.end_ms:
            part = Window(start, min(start + step, window.end_ms))
            async for refs in self._candles.duplicate_groups(
                symbol, tf.name, part, self._policy.version_field
            ):
                yield refs
            start = part.end_ms

    @contextlib.asynccontextmanager
    async def _claimed(self, collection: str, owner: str, removing: bool) -> AsyncIterator[None]:
        """Holds the collection's removal claim for the duration; refuses if another holds it."""
        if not removing:
            yield
            return
        if not await self._duplicates.claim(collection, owner, CLAIM_TTL_MS):
            raise FailedPrecondition(
                f"another duplicate removal is running on {collection}; retry when it ends",
                field="symbol",
            )
        try:
            yield
        finally:
            # Best effort: an unreleased claim expires CLAIM_TTL_MS after its last batch.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._duplicates.release(collection, owner))


def _message(enabled: bool, dry_run: bool, strategy: Strategy, removed: int, skipped: int) -> str:
    if strategy is Strategy.MANUAL:
        return "strategy manual: report only, nothing removed"
    if dry_run:
        return "dry run: nothing removed"
    if not enabled:
        return "removal is disabled (ENABLE_DUPLICATE_REMOVAL=false): report only"
    message = f"removed {removed} documents; each archived in duplicate_archive first"
    if skipped:
        message += f"; skipped {skipped} groups that changed since the snapshot (re-run to retry)"
    return message
