"""The request_id ledger: a repeated request_id returns its first result, and its
work runs once.

Guarantees:
- The work belongs to the service, not to the caller that started it: it runs in
  its own task, bounded by REQUEST_DEADLINE_S, and a caller that gives up
  (deadline, cancel) only stops waiting. Every concurrent caller with the same
  request_id waits for that one task and gets its result or its error.
- The first result is stored (fenced, like every write under leadership) under
  ``kind:request_id`` with the hash of the request's body; a later call with the
  same id and another body is FAILED_PRECONDITION REQUEST_ID_REUSED.

Limits: concurrent callers are joined within this process only; across replicas
the stored record (and forwarding of mutating calls to the leader) does the job.
A result is stored only after its work succeeded, so work that failed runs again
on a retry.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from auditsvc.domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from auditsvc.leadership.term import Leadership
from auditsvc.storage.interfaces import Fence, StateStore

T = TypeVar("T")
# Work started for a request_id runs at most this long, whoever is still waiting.
REQUEST_DEADLINE_S = 15 * 60.0
MAX_REQUEST_ID = 128

Work = Callable[[], Awaitable[dict[str, Any]]]


def digest(*parts: object) -> str:
    """A stable hash of a request's fields (or a listing's filters)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


class RequestLedger:
    """Runs each ``kind:request_id`` once and replays its stored first result."""

    def __init__(self, state: StateStore, fence: Fence, leadership: Leadership) -> None:
        self._state = state
        self._fence = fence
        self._leadership = leadership
        self._inflight: dict[str, asyncio.Task[tuple[str, dict[str, Any]]]] = {}

    async def once(
        self,
        kind: str,
        request_id: str,
        body: str,
        work: Work,
        replay: Callable[[dict[str, Any]], Awaitable[T]],
    ) -> T:
        """The first result of ``kind:request_id`` (see the module docstring)."""
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(
                f"request_id is longer than {MAX_REQUEST_ID} characters", field="request_id"
            )
        key = f"{kind}:{request_id}"
        task = self._inflight.get(key)
        if task is None:
            # Registered before the first await, so a concurrent repeat joins this task.
            task = asyncio.create_task(self._first(kind, request_id, body, work), name=key)
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._settled, key))
        try:
            stored_body, result = await asyncio.shield(task)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task.cancelled() and (caller is None or not caller.cancelling()):
                # The work was stopped (shutdown), not this caller.
                raise Unavailable(
                    "the work for this request_id was stopped; retry with the same request_id"
                ) from None
            raise
        if stored_body != body:
            raise FailedPrecondition(
                "request_id was already used with a different request body",
                field="request_id",
                reason="REQUEST_ID_REUSED",
            )
        return await replay(result)

    async def _first(
        self, kind: str, request_id: str, body: str, work: Work
    ) -> tuple[str, dict[str, Any]]:
        """The stored first result of ``kind:request_id``, doing the work if there is none."""
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                stored = await self._state.get_request(kind, request_id)
                if stored is not None:
                    return str(stored["body_hash"]), stored["result"]
                result = await work()
                term = self._leadership.term()
                epoch = term.epoch if term else self._leadership.epoch
                # Fenced like every other write under leadership.
                await self._fence.write_fenced(
                    epoch,
                    lambda s: self._state.put_request(kind, request_id, body, result, epoch, s),
                )
                return body, result
        except TimeoutError:
            raise Unavailable(
                f"the work for this request_id did not finish within {REQUEST_DEADLINE_S:.0f} s; "
                "retry with the same request_id"
            ) from None

    def _settled(self, key: str, task: asyncio.Task[tuple[str, dict[str, Any]]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # every waiter may have left: never "exception never retrieved"

    async def close(self) -> None:
        """Cancels request work still running (shutdown); its callers get UNAVAILABLE."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
