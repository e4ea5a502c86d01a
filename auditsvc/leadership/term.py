"""What the service needs to know about leadership, whatever decides it.

A ``Term`` is one continuous period of leading at one epoch. Mutating work
runs inside ``term.guard()``: when the term ends (lease lost, renew deadline
passed, shutdown) every guarded task is cancelled at once, so a deposed leader
stops deleting immediately rather than at its next check. The fence in the
store is the second line of defence for work that was already on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from auditsvc.domain.errors import Cancelled
from auditsvc.domain.records import LeaderInfo
from auditsvc.domain.values import Role


class Term:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self._tasks: set[asyncio.Task[object]] = set()
        self._ended = False
        self.reason = ""
        self.ended_event = asyncio.Event()

    @property
    def active(self) -> bool:
        return not self._ended

    def end(self, reason: str = "") -> None:
        """Idempotent: cancels every guarded task. ``reason`` (why the term ended)
        reaches the callers whose work is cancelled."""
        if self._ended:
            return
        self._ended = True
        self.reason = reason
        self.ended_event.set()
        for task in list(self._tasks):
            task.cancel()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if self._ended or task is None:
            raise Cancelled(f"leadership at epoch {self.epoch} has ended")
        self._tasks.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if self._ended:
                why = f" ({self.reason})" if self.reason else ""
                raise Cancelled(
                    f"leadership at epoch {self.epoch} ended{why}; work cancelled"
                ) from None
            raise
        finally:
            self._tasks.discard(task)


class Leadership(Protocol):
    @property
    def role(self) -> Role: ...

    @property
    def epoch(self) -> int: ...

    def term(self) -> Term | None:
        """The current term when leading (or standalone), else None."""
        ...

    async def leader(self) -> LeaderInfo:
        """The lease holder as stored, so every replica gives the same answer."""
        ...

    def last_known_address(self) -> str:
        """The live leader's address as last seen, '' when none is known."""
        ...

    def known_leader(self) -> str:
        """The live leader's id as last seen, '' when none is known."""
        ...

    def last_seen_address(self) -> str:
        """The last leader's address ever observed, even if its lease has lapsed."""
        ...


class Standalone:
    """ENABLE_LEADER_ELECTION=false: leader of itself at epoch 0."""

    def __init__(self, replica_id: str, address: str, started_ms: int) -> None:
        self._replica_id = replica_id
        self._address = address
        self._started_ms = started_ms
        self._term = Term(0)

    @property
    def role(self) -> Role:
        return Role.STANDALONE

    @property
    def epoch(self) -> int:
        return 0

    def term(self) -> Term | None:
        return self._term if self._term.active else None

    def stop(self) -> None:
        self._term.end()

    async def leader(self) -> LeaderInfo:
        return LeaderInfo(
            leader_id=self._replica_id,
            leader_address=self._address,
            epoch=0,
            is_self=True,
            elected_ms=self._started_ms,
            expires_ms=None,
        )

    def last_known_address(self) -> str:
        return self._address

    def known_leader(self) -> str:
        return self._replica_id

    def last_seen_address(self) -> str:
        return self._address
