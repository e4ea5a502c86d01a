"""One ResolveDuplicates run over one series: its counters, its report, and its
fenced batches of archive-then-delete.

:class:`Removal` is fed duplicate groups in timestamp order (:meth:`Removal.add`)
and finished once (:meth:`Removal.finish`); its counters are plain fields, read
by :meth:`Removal.report`. The caller (:mod:`auditsvc.usecases.dedupe`) owns the
validation, the per-collection lock and the claim.

Guarantees: each batch runs in one fenced transaction that re-reads its groups
and skips any that changed since the grouping; a batch aborted for exceeding the
fence's time budget committed nothing and is retried as two halves; the batch
size adapts to the measured durations (:class:`AdaptiveBatch`). Limit: at most
REPORTED_GROUPS groups and skipped timestamps are listed in the report; the
counters cover all of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from auditsvc.domain.batch_sizing import AdaptiveBatch
from auditsvc.domain.errors import FailedPrecondition, Unavailable
from auditsvc.domain.records import GroupReport
from auditsvc.domain.survivor import resolve, sort_ids
from auditsvc.domain.timeframes import Timeframe
from auditsvc.domain.values import CandleRef, Resolution, Strategy
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.interfaces import DuplicateStore, Fence

log = logging.getLogger(__name__)

# Groups in the first batch, and the most in any: the measured duration decides
# in between, so a fenced transaction stays short next to the lease heartbeat.
BATCH_GROUPS = 20
MAX_BATCH_GROUPS = 500
REPORTED_GROUPS = 100
# How long a removal's claim on its collection outlives its last batch.
CLAIM_TTL_MS = 60_000


@dataclass
class Removal:
    """The state of one run: what it is removing, where, and what it has done so far."""

    symbol: str
    tf: Timeframe
    collection: str
    strategy: Strategy
    request_id: str
    epoch: int
    # Whether anything is deleted (removal enabled, not a dry run, not manual).
    removing: bool
    # Epoch 0 only: the run holds the collection's claim under ``owner``, renewed per batch.
    claim: bool
    owner: str
    version_field: str | None
    fence: Fence
    duplicates: DuplicateStore
    metrics: Metrics
    failpoints: Failpoints
    groups: int = 0
    surplus: int = 0
    archived: int = 0
    removed: int = 0
    reported: list[GroupReport] = field(default_factory=list)
    # Timestamps of groups that changed since the grouping, skipped.
    skipped: list[int] = field(default_factory=list)
    batch: list[Resolution] = field(default_factory=list)
    sizer: AdaptiveBatch = field(
        default_factory=lambda: AdaptiveBatch(initial=BATCH_GROUPS, maximum=MAX_BATCH_GROUPS)
    )

    async def add(self, refs: list[CandleRef]) -> None:
        """Counts one duplicate group, reports it, and queues its removal."""
        if not self.tf.is_aligned(refs[0].timestamp_ms):
            return  # misaligned documents are reported by audits, never removed
        self.groups += 1
        self.surplus += len(refs) - 1
        ids = tuple(str(i) for i in sort_ids([r.doc_id for r in refs]))
        if self.strategy is Strategy.MANUAL:
            self._report(GroupReport(refs[0].timestamp_ms, "", (), ids))
            return
        decision = resolve(self.strategy, refs)
        self._report(
            GroupReport(
                decision.timestamp_ms,
                str(decision.kept.doc_id),
                tuple(str(r.doc_id) for r in decision.removed),
                ids,
            )
        )
        if self.removing:
            self.batch.append(decision)
            if len(self.batch) >= self.sizer.size:
                await self.flush()

    async def finish(self) -> None:
        """Removes what is still queued."""
        if self.removing:
            await self.flush()

    def _report(self, group: GroupReport) -> None:
        if len(self.reported) < REPORTED_GROUPS:
            self.reported.append(group)

    async def flush(self) -> None:
        """Runs the queued groups as fenced batches and adds up what they did."""
        if not self.batch:
            return
        work = list(self.batch)
        self.batch.clear()
        self.failpoints.hit("dedupe.before_batch")
        archived, removed, dropped = await self._fenced(work)
        self.failpoints.hit("dedupe.after_batch")
        self.archived += archived
        self.removed += removed
        self.skipped.extend(dropped)
        self.metrics.duplicates_removed.labels(self.symbol, self.tf.name, self.strategy.value).inc(
            removed
        )
        if self.claim and not await self.duplicates.claim(
            self.collection, self.owner, CLAIM_TTL_MS
        ):
            raise FailedPrecondition(
                f"the removal claim on {self.collection} expired and another removal took it",
                field="symbol",
            )

    async def _fenced(self, work: list[Resolution]) -> tuple[int, int, list[int]]:
        """One fenced batch; one over the fence's time budget is split and retried."""
        started = time.monotonic()
        try:
            outcome = await self.fence.write_fenced(
                self.epoch, lambda session: self._batch(work, session)
            )
        except Unavailable:
            took = time.monotonic() - started
            self.sizer.record(len(work), took)
            # An over-budget batch was aborted whole (nothing committed), so
            # halves of it can simply be run again; a single group cannot shrink.
            if len(work) < 2 or not self._over_budget(took):
                raise
            log.info(
                "removal batch over its time budget; splitting",
                extra={"request_id": self.request_id, "groups": len(work), "seconds": took},
            )
            half = len(work) // 2
            first, second = await self._fenced(work[:half]), await self._fenced(work[half:])
            return first[0] + second[0], first[1] + second[1], first[2] + second[2]
        took = time.monotonic() - started
        self.sizer.record(len(work), took)
        log.debug(
            "removal batch",
            extra={"request_id": self.request_id, "groups": len(work), "seconds": round(took, 3)},
        )
        return outcome

    async def _batch(self, work: list[Resolution], session: Any) -> tuple[int, int, list[int]]:
        """Inside the fence: guard, archive, delete; (archived, removed, skipped timestamps)."""
        safe, changed = await self.duplicates.guard(
            self.collection, self.symbol, work, self.version_field, session
        )
        dropped = [r.timestamp_ms for r in changed]
        archived = await self.duplicates.archive(
            self.collection,
            safe,
            request_id=self.request_id,
            strategy=self.strategy,
            epoch=self.epoch,
            timeframe=self.tf.name,
            session=session,
        )
        self.failpoints.hit("dedupe.between_archive_and_delete")
        removed = await self.duplicates.delete(
            self.collection,
            safe,
            request_id=self.request_id,
            strategy=self.strategy,
            epoch=self.epoch,
            archived=archived,
            skipped=dropped,
            session=session,
        )
        if removed:
            # In the batch: the next cycle cannot trust a record that still
            # counts these copies (settled_store's module docstring).
            await self.duplicates.mark_rewritten(self.symbol, self.tf.name, session)
        return archived, removed, dropped

    def _over_budget(self, took: float) -> bool:
        """Whether a failed batch ran into the fence's per-batch time budget, if it has one."""
        budget = getattr(self.fence, "batch_budget_s", None)
        return isinstance(budget, int | float) and took >= budget
