"""GetStatus's read of the newest stored audit cycle: shared, short-lived, bounded.

Guarantees:
- Each view (with and without the cycle's series reports) is read from the
  database at most every STATUS_CACHE_S; concurrent callers share one read
  (single flight), and a caller that leaves does not cancel it.
- A failed read is never cached: the next caller reads again.
- While the stored cycle does not change, the same object is returned, so callers
  can key work on it (GetStatus converts each cycle once).
- A read is bounded by MONGODB_TIMEOUT_MS; past it, Unavailable names the cause.

Limit: an answer may be up to STATUS_CACHE_S older than the database.
"""

from __future__ import annotations

import asyncio

from auditsvc.domain.errors import Unavailable
from auditsvc.domain.records import Cycle
from auditsvc.storage.interfaces import StateStore

# GetStatus reads the newest stored cycle at most this often; concurrent callers share one read.
STATUS_CACHE_S = 0.5


class LastCycleCache:
    """The newest stored cycle per view, read at most every STATUS_CACHE_S."""

    def __init__(self, state: StateStore, read_timeout_ms: int) -> None:
        self.state = state
        # MONGODB_TIMEOUT_MS: bounds the shared read of the last cycle.
        self._read_timeout_ms = read_timeout_ms
        # One cached read per view, and the last object each view returned, kept
        # while the stored cycle is unchanged.
        self._read: dict[bool, asyncio.Future[Cycle | None]] = {}
        self._read_at: dict[bool, float] = {}
        self._cycle: dict[bool, Cycle | None] = {}

    async def get(self, full: bool) -> Cycle | None:
        """The newest stored cycle; without ``full`` only its header and summary."""
        loop = asyncio.get_running_loop()
        read = self._read.get(full)
        at = self._read_at.get(full, float("-inf"))
        if read is None or (read.done() and loop.time() - at > STATUS_CACHE_S):
            read = self._read[full] = asyncio.ensure_future(self._read_last_cycle(full))
            # Every caller may have gone (deadline) before a failure: retrieve it here
            # so that it is not logged as "Task exception was never retrieved".
            read.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._read_at[full] = loop.time()
        try:
            return await asyncio.shield(read)
        except BaseException:
            if self._read.get(full) is read and read.done():
                del self._read[full]  # never cache a failure
            raise

    async def _read_last_cycle(self, full: bool) -> Cycle | None:
        timeout_ms = self._read_timeout_ms
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                cycle = await self.state.last_cycle(with_series=full)
        except TimeoutError:
            raise Unavailable(
                f"GetStatus: the database did not return the last audit cycle within "
                f"MONGODB_TIMEOUT_MS ({timeout_ms} ms); retry"
            ) from None
        kept = self._cycle.get(full)
        if cycle is not None and cycle == kept:
            return kept  # unchanged: keep the object its conversion is keyed on
        self._cycle[full] = cycle
        return cycle
