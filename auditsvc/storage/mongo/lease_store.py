"""The lease document: one atomic find_one_and_update per acquire or renew.

Expiry is judged with the database's clock (``$$NOW``), never the caller's.
Times are compared as epoch milliseconds (``$toLong``), which every MongoDB
since 4.0 evaluates the same way and which avoids mixing time zone flavours.

The lease is never written inside a data transaction (see
``auditsvc.storage.mongo.fence``), so an acquire or renew never waits on a batch, dead
or alive. Every call is bounded on the server (``maxTimeMS``) and written and
read with majority concern, so a grant cannot be rolled back by a failover.

Document fields: ``holder`` is the per-process identity (``REPLICA_ID/<uuid>``)
that the lease is granted to; ``replica_id`` the display name; ``session`` the
lsid of the session the holder runs its fenced batches on (recorded when it
takes office), and ``predecessor_session`` an earlier term's, which a new
holder kills before its first fenced write; ``predecessor_killed`` says a term
has killed it.

Guarantee: a batch session is forgotten only once a term has killed it. A new
term moves ``session`` into ``predecessor_session`` only when ``session`` holds a
real lsid; a term that died before recording its own leaves the unkilled
predecessor in place for the next. (A term kills its predecessor before it
records its own session, so a recorded session means the one it replaces was
killed, or the kill failed and was logged.) Limit: a kill that fails (other
database users, a lost connection) is not retried by a later term once the
session is replaced; that term's batches then wait for the server's
transaction lifetime, as the fence's docstring says.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument, WriteConcern
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.read_concern import ReadConcern

from auditsvc.storage.interfaces import Lease
from auditsvc.storage.mongo.database import LEASES, Database, to_ms

MAJORITY = WriteConcern(w="majority")
MAJORITY_READ = ReadConcern("majority")


def _now_ms() -> dict[str, Any]:
    return {"$toLong": "$$NOW"}


def _lease(doc: dict[str, Any], now_ms: int) -> Lease:
    return Lease(
        holder=doc["holder"],
        address=doc.get("address", ""),
        epoch=int(doc["epoch"]),
        acquired_ms=to_ms(doc["acquired_at"]),
        renewed_ms=to_ms(doc["renewed_at"]),
        expires_ms=to_ms(doc["expires_at"]),
        now_ms=now_ms,
        replica_id=str(doc.get("replica_id", "")),
        predecessor_session=doc.get("predecessor_session"),
        predecessor_killed=bool(doc.get("predecessor_killed", False)),
    )


class MongoLease:
    """Acquire, renew, release and read one election's lease for one holder identity."""

    def __init__(
        self, database: Database, election: str, holder: str, name: str, max_time_ms: int
    ) -> None:
        self._col = database.db[LEASES].with_options(
            write_concern=MAJORITY, read_concern=MAJORITY_READ
        )
        # A release rolled back by a failover is harmless (the lease then just
        # expires), so it does not wait for a majority: shutdown stays quick.
        self._release_col = self._col.with_options(write_concern=WriteConcern(w=1))
        self._election = election
        self.holder = holder
        self.name = name
        self._max_time_ms = max(1, max_time_ms)

    def live_filter(self, epoch: int) -> dict[str, Any]:
        """Matches the lease while this holder holds it, unexpired, at ``epoch``."""
        return {
            "_id": self._election,
            "holder": self.holder,
            "epoch": epoch,
            "$expr": {"$gt": [{"$toLong": "$expires_at"}, _now_ms()]},
        }

    async def try_acquire(self, address: str, duration_ms: int) -> Lease | None:
        """Acquires or renews; None when another holder has a live lease."""
        mine = {"$eq": ["$holder", self.holder]}
        expired = {"$lte": [{"$toLong": {"$ifNull": ["$expires_at", 0]}}, _now_ms()]}
        held = {"$and": [mine, {"$not": [{"$ifNull": ["$released", False]}]}]}
        renewing = "$_renewing"
        # Any new term (takeover, or re-taking our own expired or released
        # lease) gets a new epoch, so fencing never confuses two terms.
        update: list[dict[str, Any]] = [
            {"$set": {"_renewing": {"$and": [held, {"$not": [expired]}]}}},
            {
                "$set": {
                    "epoch": {
                        "$cond": [renewing, "$epoch", {"$add": [{"$ifNull": ["$epoch", 0]}, 1]}]
                    },
                    "acquired_at": {"$cond": [renewing, "$acquired_at", "$$NOW"]},
                    # A new term hands the old batch session over to be killed, but only
                    # a real one: a term that died before recording its session must not
                    # erase the unkilled predecessor it inherited.
                    "predecessor_session": {
                        "$cond": [
                            {"$or": [renewing, {"$eq": [{"$ifNull": ["$session", None]}, None]}]},
                            {"$ifNull": ["$predecessor_session", None]},
                            "$session",
                        ]
                    },
                    "predecessor_killed": {
                        "$cond": [
                            {"$or": [renewing, {"$eq": [{"$ifNull": ["$session", None]}, None]}]},
                            {"$ifNull": ["$predecessor_killed", False]},
                            False,
                        ]
                    },
                    "session": {"$cond": [renewing, {"$ifNull": ["$session", None]}, None]},
                    "holder": self.holder,
                    "replica_id": self.name,
                    "address": address,
                    "renewed_at": "$$NOW",
                    "expires_at": {"$add": ["$$NOW", duration_ms]},
                    "now_ms": _now_ms(),
                    "released": False,
                }
            },
            {"$unset": "_renewing"},
        ]
        query = {"_id": self._election, "$expr": {"$or": [held, expired]}}
        try:
            doc = await self._col.find_one_and_update(
                query,
                update,
                upsert=True,
                return_document=ReturnDocument.AFTER,
                maxTimeMS=self._max_time_ms,
            )
        except DuplicateKeyError:
            return None
        if doc is None:
            # Seen under contention (n=1, value null): the update may or may not have
            # applied, so report an unknown outcome rather than guess either way.
            raise OperationFailure("lease findAndModify returned no document; outcome unknown")
        return _lease(doc, int(doc["now_ms"]))

    async def record_session(self, epoch: int, lsid: Any) -> bool:
        """Stores the lsid of this term's batch session; False if the term is already over."""
        doc = await self._col.find_one_and_update(
            self.live_filter(epoch), {"$set": {"session": lsid}}, maxTimeMS=self._max_time_ms
        )
        return doc is not None

    async def mark_killed(self, epoch: int, lsid: Any) -> bool:
        """Notes that this term killed ``lsid``, the predecessor session; False if the
        term is over or the lease names another predecessor."""
        doc = await self._col.find_one_and_update(
            {**self.live_filter(epoch), "predecessor_session": lsid},
            {"$set": {"predecessor_killed": True}},
            maxTimeMS=self._max_time_ms,
        )
        return doc is not None

    async def release(self, epoch: int) -> bool:
        """Expires the lease now, keeping the epoch, if we still hold it."""
        doc = await self._release_col.find_one_and_update(
            {"_id": self._election, "holder": self.holder, "epoch": epoch},
            [{"$set": {"expires_at": "$$NOW", "released": True, "now_ms": _now_ms()}}],
            maxTimeMS=self._max_time_ms,
        )
        return doc is not None

    async def read(self) -> Lease | None:
        cursor = await self._col.aggregate(
            [{"$match": {"_id": self._election}}, {"$set": {"now_ms": _now_ms()}}],
            maxTimeMS=self._max_time_ms,
        )
        docs = await cursor.to_list(1)
        if not docs:
            return None
        return _lease(docs[0], int(docs[0]["now_ms"]))

    async def held(self, epoch: int, session: Any = None) -> bool:
        """Whether this holder holds a live lease at ``epoch`` (inside ``session`` if given)."""
        found = await self._col.find_one(
            self.live_filter(epoch), {"_id": 1}, session=session, max_time_ms=self._max_time_ms
        )
        return found is not None
