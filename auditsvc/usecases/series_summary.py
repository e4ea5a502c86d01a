"""GetStatus's summary of every configured series, from the stored scores as
served now (verdicts dated, UNKNOWN when nobody vouches), whatever the last
cycle selected.

Reading every series' score is one query that grows with the series count, so
the summary is refreshed in the background at most every ``REFRESH_S`` and a
caller gets the newest one made (single flight; only the very first call
waits). A summary is at most ``REFRESH_S`` plus one read old; a read that fails
keeps the last one, and None until one succeeds (GetStatus then shows the last
cycle's own summary). The same refresh counts the stored gaps by state (one
aggregation, a group per state).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from auditsvc.domain.records import CycleSummary
from auditsvc.domain.summary import summarize_scores
from auditsvc.ops.settings import AuditSettings
from auditsvc.storage.interfaces import StateStore
from auditsvc.usecases.score_listing import configured_keys
from auditsvc.usecases.verdicts import VerdictWatch

log = logging.getLogger(__name__)

REFRESH_S = 1.0


class SeriesSummary:
    def __init__(
        self, audit: AuditSettings, state: StateStore, verdicts: VerdictWatch, timeout_s: float
    ) -> None:
        self._state = state
        self._verdicts = verdicts
        self._timeout_s = timeout_s
        self._configured = configured_keys(audit)
        self._summary: CycleSummary | None = None
        self._made_at = float("-inf")
        self._refresh: asyncio.Task[None] | None = None

    async def get(self) -> CycleSummary | None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._made_at > REFRESH_S and (
            self._refresh is None or self._refresh.done()
        ):
            self._refresh = asyncio.create_task(self._make(), name="series-summary")
        if self._summary is None and self._refresh is not None:
            await asyncio.shield(asyncio.wait((self._refresh,)))
        return self._summary

    async def close(self) -> None:
        """Cancels a refresh still running (shutdown), so no read outlives the client."""
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _make(self) -> None:
        reading = self._verdicts.current()  # before the rows: see VerdictWatch.current
        try:
            async with asyncio.timeout(self._timeout_s):
                rows = await self._state.scores()
                gap_states = await self._state.gap_state_counts()
        except Exception as exc:  # GetStatus must answer: keep the last summary
            log.debug("series summary not read", extra={"reason": type(exc).__name__})
            return
        served = [
            self._verdicts.serve(r, reading)
            for r in rows
            if (r.symbol, r.timeframe) in self._configured
        ]
        self._summary = dataclasses.replace(summarize_scores(served), gap_states=tuple(gap_states))
        self._made_at = asyncio.get_running_loop().time()
