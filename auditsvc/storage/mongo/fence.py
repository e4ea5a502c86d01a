"""Fenced writes: a batch made under leadership commits only while no newer
epoch has written, and only if the lease was live at its epoch when it began.

The fence is its own document (``leader_fence``, one per election), written
only by fenced batches and by a new leader taking office, never by the lease.
With transactions (replica set or mongos) each batch runs in one transaction:

1. it reads the lease in the transaction and refuses to go on unless this
   process holds it, unexpired by ``$$NOW``, at the batch's epoch;
2. it does its work;
3. as its last write it updates the fence document, conditioned on the fence
   epoch being no newer than its own, and sets it to its own;
4. it commits, with majority write concern.

A new leader writes the fence at its new epoch when it takes office, before
its first batch. Either that write commits before an old batch's snapshot (the
old batch's fence update then matches nothing: ``Fenced``), or after it (the
old batch's fence update conflicts, and its retry sees the new epoch or a
lapsed lease: ``Fenced``), so every batch of epoch E is ordered before every
write of epoch E + 1. Touching the fence last keeps it locked only between
that write and the commit.

A dead or paused leader may leave a transaction open holding locks on the
fence and on data documents. Acquiring the lease never waits for it (the lease
is outside batches), and the new leader's ``killSessions`` on the predecessor's
recorded batch session releases those locks at once (``take_office``). Where
that fails (a server that refuses it, another user's session) the claim of the
fence waits, bounded, and the first batches fail with UNAVAILABLE until the
server's transaction lifetime limit aborts the orphan.

Without transactions the lease and fence are re-checked before each batch,
which narrows but cannot close the window; the epoch is stored in every
document either way. Epoch 0 means standalone: no lease to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import ReturnDocument, WriteConcern
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.read_concern import ReadConcern

from auditsvc.domain.errors import Fenced, Unavailable
from auditsvc.ops.failpoints import Failpoints
from auditsvc.storage.mongo.batch_gate import BatchGate
from auditsvc.storage.mongo.database import FENCES, Database
from auditsvc.storage.mongo.lease_store import MAJORITY, MAJORITY_READ, MongoLease

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_CONFLICT = 112


# UnsatisfiableWriteConcern, UnknownReplWriteConcern: the deployment cannot do majority.
_NO_MAJORITY = {100, 79}


class MajorityUnavailable(Exception):
    """The deployment cannot acknowledge majority writes; start-up must fail."""


def _refused(epoch: int) -> Fenced:
    return Fenced(f"lease no longer held at epoch {epoch}; write refused")


class MongoFence:
    def __init__(
        self,
        database: Database,
        election: str,
        lease: MongoLease,
        gate: BatchGate,
        *,
        batch_budget_s: float,
        call_timeout_s: float,
        retry_budget_s: float = 5.0,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._database = database
        self._election = election
        self._lease = lease
        self._gate = gate
        self._col = database.db[FENCES].with_options(
            write_concern=MAJORITY, read_concern=MAJORITY_READ
        )
        self.batch_budget_s = batch_budget_s
        self.last_batch_seconds = 0.0
        self._call_timeout = call_timeout_s
        self._retry_budget = retry_budget_s
        self._failpoints = failpoints or Failpoints()

    async def check_majority(self, timeout_ms: int) -> None:
        """One majority write with a deadline; MajorityUnavailable if it cannot be had.

        A replica set (one member included) and mongos give it; a bare mongod
        acknowledges ``w: majority`` once journaled, which is all it can offer.
        Connection errors propagate (not ready; retried).
        """
        probe = self._col.with_options(
            write_concern=WriteConcern(w="majority", wtimeout=timeout_ms)
        )
        try:
            await probe.update_one(
                {"_id": f"{self._election}/majority-check"},
                {"$currentDate": {"at": True}},
                upsert=True,
            )
        except WriteConcernError as exc:
            raise MajorityUnavailable(
                f"the database did not acknowledge a majority write within {timeout_ms} ms "
                f"({exc}); leadership needs w:majority (see docs/AUDITOR.md, Durability)"
            ) from exc
        except OperationFailure as exc:
            if exc.code in _NO_MAJORITY:
                raise MajorityUnavailable(
                    f"the database refuses w:majority ({exc}); leadership needs it "
                    "(see docs/AUDITOR.md, Durability)"
                ) from exc
            raise

    # -- taking office ---------------------------------------------------------

    async def kill(self, lsid: Any) -> bool:
        """Aborts the predecessor's open batch, if any, so its locks go at once;
        False (logged) when the server refused or did not answer."""
        try:
            await asyncio.wait_for(
                self._database.client.admin.command({"killSessions": [lsid]}),
                self._call_timeout,
            )
        except (PyMongoError, TimeoutError) as exc:
            log.warning(
                "could not kill the previous leader's batch session; an open batch of it "
                "holds its locks until the server aborts it: %r",
                exc,
            )
            return False
        return True

    async def claim(self, epoch: int) -> None:
        """Writes the fence at ``epoch`` (bounded); raises Fenced if a newer epoch has."""
        try:
            await asyncio.wait_for(
                self._col.find_one_and_update(
                    {"_id": self._election, "epoch": {"$lte": epoch}},
                    {"$set": {"epoch": epoch, "holder": self._lease.holder}},
                    upsert=True,
                    maxTimeMS=max(1, round(self._call_timeout * 1000)),
                ),
                self._call_timeout,
            )
        except DuplicateKeyError:
            raise _refused(epoch) from None
        except (PyMongoError, TimeoutError) as exc:
            # Its batches still fence themselves; they wait for the lock instead.
            log.warning("could not write the fence on taking office: %r", exc)

    # -- batches ---------------------------------------------------------------

    async def check(self, epoch: int) -> None:
        """Raises Fenced unless this process holds a live lease at ``epoch`` and no
        newer epoch has written the fence."""
        if epoch == 0:
            return
        if not await self._lease.held(epoch):
            raise _refused(epoch)
        fence = await self._col.find_one({"_id": self._election}, {"epoch": 1})
        if fence is not None and int(fence["epoch"]) > epoch:
            raise _refused(epoch)

    async def write_fenced(self, epoch: int, work: Callable[[Any], Awaitable[T]]) -> T:
        """Runs ``work(session)`` as one fenced batch; session is None without transactions."""
        if epoch == 0 or not self._database.transactions:
            await self.check(epoch)
            return await work(None)
        async with self._gate.batch() as session:
            return await self._transact(session, epoch, work)

    async def _guarded(self, session: Any, epoch: int, work: Callable[[Any], Awaitable[T]]) -> T:
        self._failpoints.hit("fence.before_check")
        if not await self._lease.held(epoch, session):
            raise _refused(epoch)
        self._failpoints.hit("fence.before_work")
        result = await work(session)
        self._failpoints.hit("fence.before_touch")
        try:
            touched = await self._col.find_one_and_update(
                {"_id": self._election, "epoch": {"$lte": epoch}},
                {"$set": {"epoch": epoch}, "$inc": {"batches": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
        except DuplicateKeyError:
            raise _refused(epoch) from None
        if touched is None:
            raise _refused(epoch)
        self._failpoints.hit("fence.before_commit")
        return result

    async def _transact(self, session: Any, epoch: int, work: Callable[[Any], Awaitable[T]]) -> T:
        """Runs one batch in a transaction within ``batch_budget_s``, retrying write
        conflicts within ``retry_budget_s``.

        Unlike ``with_transaction`` (which retries for two minutes) a lost
        connection fails at once, and is reported as a lost database.
        """
        deadline = time.monotonic() + self._retry_budget
        delay = 0.005
        while True:
            began = time.monotonic()
            try:
                async with asyncio.timeout(self.batch_budget_s) as budget:
                    await session.start_transaction(
                        read_concern=ReadConcern("snapshot"),
                        write_concern=MAJORITY,
                        max_commit_time_ms=max(1, round(self.batch_budget_s * 1000)),
                    )
                    result = await self._guarded(session, epoch, work)
                    await session.commit_transaction()
                self.last_batch_seconds = time.monotonic() - began
                self._failpoints.hit("fence.after_commit")
                return result
            except BaseException as exc:
                self.last_batch_seconds = time.monotonic() - began
                if session.in_transaction:
                    with contextlib.suppress(PyMongoError, TimeoutError):
                        await asyncio.wait_for(session.abort_transaction(), self._call_timeout)
                if isinstance(exc, TimeoutError) and budget.expired():
                    raise Unavailable(
                        f"fenced batch took over its {self.batch_budget_s:g}s budget; "
                        "retry with a smaller batch"
                    ) from exc
                if isinstance(exc, ConnectionFailure):
                    raise Unavailable("database unreachable; retry later") from exc
                transient = isinstance(exc, PyMongoError) and exc.has_error_label(
                    "TransientTransactionError"
                )
                if not transient:
                    raise
                if time.monotonic() + delay >= deadline:
                    if getattr(exc, "code", None) == WRITE_CONFLICT:
                        raise Unavailable("write conflicts persisted; retry later") from exc
                    raise Unavailable(f"transaction could not commit; retry later ({exc})") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
