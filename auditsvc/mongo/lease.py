"""The lease document: one atomic find_one_and_update per acquire or renew.

Expiry is judged with the database's clock (``$$NOW``), never the caller's.
Times are compared as epoch milliseconds (``$toLong``), which every MongoDB
since 4.0 evaluates the same way and which avoids mixing time zone flavours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from auditsvc.mongo.client import LEASES, Database, to_ms
from auditsvc.mongo.gate import LeaseGate


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    address: str
    epoch: int
    acquired_ms: int
    renewed_ms: int
    expires_ms: int
    # The database's clock when the lease was read or written.
    now_ms: int

    @property
    def live(self) -> bool:
        return self.expires_ms > self.now_ms


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
    )


class MongoLeaseStore:
    def __init__(self, database: Database, election: str, gate: LeaseGate | None = None) -> None:
        self._col = database.db[LEASES]
        self._election = election
        # Shared with MongoFence: our own renewals wait for a fenced batch to
        # commit instead of conflicting with it on the lease document.
        self._gate = gate or LeaseGate()

    async def try_acquire(self, holder: str, address: str, duration_ms: int) -> Lease | None:
        """Acquires or renews; None when another replica holds a live lease."""
        mine = {"$eq": ["$holder", holder]}
        expired = {"$lte": [{"$toLong": {"$ifNull": ["$expires_at", 0]}}, _now_ms()]}
        held = {"$and": [mine, {"$not": [{"$ifNull": ["$released", False]}]}]}
        # Any new term (takeover, or re-taking our own expired or released
        # lease) gets a new epoch, so fencing never confuses two terms.
        update: list[dict[str, Any]] = [
            {"$set": {"_renewing": {"$and": [held, {"$not": [expired]}]}}},
            {
                "$set": {
                    "epoch": {
                        "$cond": [
                            "$_renewing",
                            "$epoch",
                            {"$add": [{"$ifNull": ["$epoch", 0]}, 1]},
                        ]
                    },
                    "acquired_at": {"$cond": ["$_renewing", "$acquired_at", "$$NOW"]},
                    "holder": holder,
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
            async with self._gate.renewal():
                doc = await self._col.find_one_and_update(
                    query, update, upsert=True, return_document=ReturnDocument.AFTER
                )
        except DuplicateKeyError:
            return None
        if doc is None:
            # Seen under contention (n=1, value null): the update may or may not have
            # applied, so report an unknown outcome rather than guess either way.
            raise OperationFailure("lease findAndModify returned no document; outcome unknown")
        return _lease(doc, int(doc["now_ms"]))

    async def release(self, holder: str, epoch: int) -> bool:
        """Expires the lease now, keeping the epoch, if we still hold it."""
        async with self._gate.renewal():
            doc = await self._col.find_one_and_update(
                {"_id": self._election, "holder": holder, "epoch": epoch},
                [{"$set": {"expires_at": "$$NOW", "released": True, "now_ms": _now_ms()}}],
            )
        return doc is not None

    async def read(self) -> Lease | None:
        cursor = await self._col.aggregate(
            [{"$match": {"_id": self._election}}, {"$set": {"now_ms": _now_ms()}}]
        )
        docs = await cursor.to_list(1)
        if not docs:
            return None
        return _lease(docs[0], int(docs[0]["now_ms"]))
