"""The leader-only audit loop. It calls the very same ``AuditService.run_audit``
that the RPC calls, so there is one code path for audits.

While this replica leads, a cycle runs every AUDIT_INTERVAL seconds after the
last successful *scheduled* cycle; RunAudit cycles do not move it (they may cover
one series, and must not starve the others). On gaining
leadership it runs at once when the newest cycle stored by any replica is older
than AUDIT_INTERVAL, so a failover never leaves a hole of a whole interval.
Losing leadership cancels the running cycle (the Term guard does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from auditsvc.domain.errors import AuditError
from auditsvc.domain.records import SCHEDULED
from auditsvc.leadership.term import Leadership
from auditsvc.ops.clock import Clock
from auditsvc.storage.interfaces import StateStore
from auditsvc.usecases.audit_service import AuditService

log = logging.getLogger(__name__)

_IDLE_POLL = 0.2


class Scheduler:
    def __init__(
        self,
        service: AuditService,
        state: StateStore,
        leadership: Leadership,
        clock: Clock,
        interval: float,
        startup_delay: float,
    ) -> None:
        self._service = service
        self._state = state
        self._leadership = leadership
        self._clock = clock
        self._interval = interval
        self._startup_delay = startup_delay
        self._task: asyncio.Task[None] | None = None
        self.next_cycle_ms: int | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _due_ms(self) -> int:
        try:
            last = await self._state.last_success_ms()
        except Exception:
            last = None
        return self._clock.now_ms() if last is None else last + int(self._interval * 1000)

    async def _run(self) -> None:
        self.next_cycle_ms = self._clock.now_ms() + int(self._startup_delay * 1000)
        await asyncio.sleep(self._startup_delay)
        while True:
            term = self._leadership.term()
            if term is None:
                self.next_cycle_ms = None
                await asyncio.sleep(_IDLE_POLL)
                continue
            due = await self._due_ms()
            self.next_cycle_ms = due
            wait = (due - self._clock.now_ms()) / 1000
            if wait > 0:
                # Wake early if the term ends, so a new leader's due time is recomputed.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(term.ended_event.wait(), timeout=wait)
                continue
            try:
                await self._service.run_audit((), (), None, None, trigger=SCHEDULED)
            except AuditError as exc:
                log.warning("scheduled cycle did not complete", extra={"reason": str(exc)})
                await asyncio.sleep(min(self._interval, 5.0))
            except Exception as exc:
                log.warning(
                    "scheduled cycle failed", extra={"reason": f"{type(exc).__name__}: {exc}"}
                )
                await asyncio.sleep(min(self._interval, 5.0))
