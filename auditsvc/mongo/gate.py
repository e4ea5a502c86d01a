"""One gate in front of the lease document for this process.

Our own renewals and our fenced batches both write the lease document, so
they must not overlap (the batch would fail with a write conflict, over and
over). A plain FIFO lock is not enough: a renewal queued behind several
batches could wait past the renew deadline and make a healthy leader step
down. Here a renewal goes next: batches do not start while one is waiting, so
it waits for at most the one batch already running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class LeaseGate:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._renewals_waiting = 0
        self._no_renewal_waiting = asyncio.Event()
        self._no_renewal_waiting.set()

    @asynccontextmanager
    async def renewal(self) -> AsyncIterator[None]:
        self._renewals_waiting += 1
        self._no_renewal_waiting.clear()
        try:
            async with self._lock:
                yield
        finally:
            self._renewals_waiting -= 1
            if self._renewals_waiting == 0:
                self._no_renewal_waiting.set()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        while True:
            await self._no_renewal_waiting.wait()
            await self._lock.acquire()
            if self._renewals_waiting == 0:
                break
            # A renewal arrived while we queued: let it through first.
            self._lock.release()
        try:
            yield
        finally:
            self._lock.release()
