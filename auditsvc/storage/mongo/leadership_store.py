"""One leadership store per process: the lease, the fence and the gate between them.

``MongoLeadershipStore`` implements ``auditsvc.storage.interfaces.LeadershipStore``. It is
the only object that builds a ``BatchGate``, so nothing can wire a lease and a
fence with two different gates. It is bound to one holder identity
(``REPLICA_ID/<uuid4>``, new at every process start) and to the display name
(``REPLICA_ID``) shown in GetLeader, logs and ``served_by``.

Every call is bounded: the lease calls on the server with ``maxTimeMS`` and in
the caller with the elector's per-call timeout; a fenced batch by
``batch_budget_s``. ``last_batch_seconds`` reports how long the last batch
took, so that callers can size their next one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from auditsvc.domain.errors import Fenced
from auditsvc.ops.failpoints import Failpoints
from auditsvc.storage.interfaces import Lease
from auditsvc.storage.mongo.batch_gate import BatchGate
from auditsvc.storage.mongo.database import Database
from auditsvc.storage.mongo.fence import MongoFence
from auditsvc.storage.mongo.lease_store import MongoLease

log = logging.getLogger(__name__)

T = TypeVar("T")


def process_identity(replica_id: str) -> str:
    """A holder identity no other process (nor a restart of this one) shares."""
    return f"{replica_id}/{uuid.uuid4().hex}"


class MongoLeadershipStore:
    def __init__(
        self,
        database: Database,
        election: str,
        replica_id: str,
        *,
        holder: str | None = None,
        call_timeout_s: float = 2.0,
        batch_budget_s: float = 5.0,
        failpoints: Failpoints | None = None,
    ) -> None:
        self.holder = holder or process_identity(replica_id)
        self.replica_id = replica_id
        self._lease = MongoLease(
            database, election, self.holder, replica_id, round(call_timeout_s * 1000)
        )
        self._gate = BatchGate(database)
        self._failpoints = failpoints or Failpoints()
        self._fence = MongoFence(
            database,
            election,
            self._lease,
            self._gate,
            batch_budget_s=batch_budget_s,
            call_timeout_s=call_timeout_s,
            failpoints=failpoints,
        )

    # -- the lease -------------------------------------------------------------

    async def try_acquire(self, address: str, duration_ms: int) -> Lease | None:
        return await self._lease.try_acquire(address, duration_ms)

    async def release(self, epoch: int) -> bool:
        return await self._lease.release(epoch)

    async def read(self) -> Lease | None:
        return await self._lease.read()

    async def take_office(self, lease: Lease) -> None:
        """Prepares a new term before its first fenced write.

        Opens the term's batch session, kills the predecessor's batch session
        (unless a term already did) and marks it killed, records the new lsid in
        the lease, then writes the fence at the new epoch. Raises Fenced if the
        term is already over.

        The kill comes before the record: once this term's session is recorded
        the next term forgets the predecessor (the lease keeps one), so it must
        be dead by then. A term that dies before recording leaves the
        predecessor to the next one.
        """
        self._failpoints.hit("leadership.before_take_office")
        lsid = await self._gate.new_term()
        predecessor = lease.predecessor_session
        unkilled = predecessor is not None and not lease.predecessor_killed
        if unkilled and predecessor != lsid and await self._fence.kill(predecessor):
            await self._lease.mark_killed(lease.epoch, predecessor)
        if not await self._lease.record_session(lease.epoch, lsid):
            raise Fenced(f"lease no longer held at epoch {lease.epoch}; not taking office")
        await self._fence.claim(lease.epoch)

    # -- the fence -------------------------------------------------------------

    async def check(self, epoch: int) -> None:
        await self._fence.check(epoch)

    async def write_fenced(self, epoch: int, work: Callable[[Any], Awaitable[T]]) -> T:
        return await self._fence.write_fenced(epoch, work)

    @property
    def batch_budget_s(self) -> float:
        return self._fence.batch_budget_s

    @property
    def last_batch_seconds(self) -> float:
        return self._fence.last_batch_seconds

    async def check_majority(self, timeout_ms: int) -> None:
        """Raises MajorityUnavailable when the deployment cannot give w:majority."""
        await self._fence.check_majority(timeout_ms)

    async def close(self) -> None:
        await self._gate.close()
