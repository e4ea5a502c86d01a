"""Fenced writes: a write made under leadership commits only while the lease
still holds the writer's epoch.

With transactions (replica set or mongos) each batch runs in a transaction
whose last write updates the lease document, conditioned on holder and epoch
and on the lease being unexpired by the database's clock. Because it writes,
an acquisition by another replica after the transaction's snapshot makes it
fail with a write conflict, and the retry sees the new epoch and gives up, so
no batch can commit after a newer epoch exists. Touching the lease last (not
first) keeps the lease locked only between that touch and the commit, so a
leader paused mid-batch does not block the takeover. Without
transactions the lease is re-checked before each batch, which narrows but
cannot close the window; the epoch is stored in every document either way so
that an audit can prove which leader wrote what.

Epoch 0 means standalone (ENABLE_LEADER_ELECTION=false): no lease to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo.errors import ConnectionFailure, PyMongoError

from auditsvc.audit.errors import Fenced, Unavailable
from auditsvc.mongo.client import LEASES, Database
from auditsvc.mongo.gate import LeaseGate

T = TypeVar("T")

_LIVE = {"$expr": {"$gt": [{"$toLong": "$expires_at"}, {"$toLong": "$$NOW"}]}}


class MongoFence:
    def __init__(
        self,
        database: Database,
        election: str,
        replica_id: str,
        retry_budget: float = 5.0,
        gate: LeaseGate | None = None,
    ) -> None:
        self._database = database
        # Shared with MongoLeaseStore, so a batch never races our own renewal.
        self._gate = gate or LeaseGate()
        self._retry_budget = retry_budget
        self._election = election
        self._replica_id = replica_id

    def _lease_filter(self, epoch: int) -> dict[str, Any]:
        return {"_id": self._election, "holder": self._replica_id, "epoch": epoch, **_LIVE}

    async def check(self, epoch: int) -> None:
        """Raises Fenced unless this replica holds a live lease at ``epoch``."""
        if epoch == 0:
            return
        lease = await self._database.db[LEASES].find_one(self._lease_filter(epoch))
        if lease is None:
            raise Fenced(f"lease no longer held at epoch {epoch}; write refused")

    async def run(self, epoch: int, work: Callable[[Any], Awaitable[T]]) -> T:
        """Runs ``work(session)`` as one fenced batch; session is None without transactions."""
        if epoch == 0 or not self._database.transactions:
            await self.check(epoch)
            return await work(None)
        leases = self._database.db[LEASES]

        async def guarded(session: Any) -> T:
            # Fail fast when clearly deposed; the touch below is the real fence.
            if (
                await leases.find_one(self._lease_filter(epoch), {"_id": 1}, session=session)
                is None
            ):
                raise Fenced(f"lease no longer held at epoch {epoch}; write refused")
            result = await work(session)
            # Touching the lease last keeps its lock for microseconds, so a leader
            # paused mid-batch cannot hold up a takeover. If another replica took
            # the lease after our snapshot, this write conflicts and the retry
            # sees the new epoch and raises Fenced.
            touched = await leases.find_one_and_update(
                self._lease_filter(epoch), {"$inc": {"fenced_batches": 1}}, session=session
            )
            if touched is None:
                raise Fenced(f"lease no longer held at epoch {epoch}; write refused")
            return result

        async with self._database.client.start_session() as session:
            return await self._transact(session, guarded)

    async def _transact(self, session: Any, guarded: Callable[[Any], Awaitable[T]]) -> T:
        """Runs ``guarded`` in a transaction, retrying write conflicts within a budget.

        Unlike ``with_transaction`` (which retries for two minutes) a lost
        connection fails at once, so a cycle cut off from the database ends as
        failed promptly instead of hanging until the renew deadline.
        """
        deadline = time.monotonic() + self._retry_budget
        delay = 0.005
        while True:
            try:
                async with self._gate.batch():
                    await session.start_transaction()
                    result = await guarded(session)
                    await session.commit_transaction()
                return result
            except BaseException as exc:
                if session.in_transaction:
                    with contextlib.suppress(PyMongoError):
                        await session.abort_transaction()
                retry = (
                    isinstance(exc, PyMongoError)
                    and not isinstance(exc, ConnectionFailure)
                    and exc.has_error_label("TransientTransactionError")
                    and time.monotonic() + delay < deadline
                )
                if not retry:
                    if isinstance(exc, PyMongoError) and exc.has_error_label(
                        "TransientTransactionError"
                    ):
                        raise Unavailable("write conflicts persisted; retry later") from exc
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
