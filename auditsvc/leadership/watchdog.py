"""The renew-deadline watchdog: a leader steps down the moment its renewals stop.

``RenewWatchdog`` keeps the monotonic time at which the last successful renewal
was *sent* and, while armed for a term, a task that calls ``expire`` as soon as
``renew_deadline`` has passed since then, without waiting for a database call
that may hang until the socket timeout.

Guarantees:

* **On time.** While armed, ``expire`` runs at most one event-loop wake-up
  after ``renewed_at + renew_deadline`` on the injected monotonic clock, and
  only once; a renewal recorded in between pushes it back.
* **Cancelled cleanly.** ``disarm`` cancels the task (unless it is the caller:
  ``expire`` may end the term itself), and keeps it in ``dying`` until it has
  finished, so shutdown can wait for it.

Limits: it is as punctual as the event loop; a loop stalled longer than
``lease_duration - renew_deadline`` lets the lease expire before ``expire``
runs (the elector's docstring states what then still holds).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from auditsvc.ops.clock import Clock


class RenewWatchdog:
    def __init__(self, clock: Clock, renew_deadline: float) -> None:
        self._clock = clock
        self._deadline = renew_deadline
        # Monotonic time at which the last successful acquire/renew was sent.
        self.renewed_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        # Disarmed tasks not yet finished.
        self.dying: set[asyncio.Task[None]] = set()

    def renewed(self, sent_at: float) -> None:
        """Records a successful renewal sent at ``sent_at`` (monotonic)."""
        self.renewed_at = sent_at

    def overdue(self) -> bool:
        """Whether renew_deadline has passed since the last successful renewal."""
        return self._clock.monotonic() - self.renewed_at >= self._deadline

    def arm(self, name: str, expire: Callable[[], None], active: Callable[[], bool]) -> None:
        """Watches one term: calls ``expire`` at the deadline while ``active()`` holds."""
        self._task = asyncio.create_task(self._watch(expire, active), name=name)

    def disarm(self) -> None:
        """Stops watching; a no-op when not armed."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            self.dying.add(task)
            task.add_done_callback(self.dying.discard)

    async def _watch(self, expire: Callable[[], None], active: Callable[[], bool]) -> None:
        while active():
            remaining = self.renewed_at + self._deadline - self._clock.monotonic()
            if remaining <= 0:
                expire()
                return
            await asyncio.sleep(remaining)
