"""Archive-then-delete of duplicate candles, and the audit log of each batch.

Each batch archives whole documents before deleting them. The archive key is
(request_id, collection, _id), so re-running an interrupted request archives
nothing twice; with transactions a batch is all-or-nothing.

Guarantees:

* Nothing is deleted unless the archive holds it for this request.
* A removal deletes only what the caller was shown, and never empties a slot:
  :meth:`MongoDuplicateStore.guard` re-reads each slot inside the batch and
  drops a group in which anything changed since the grouping (a document gone,
  moved, added, or edited: its version, else its content); the delete then
  takes only the surplus of unchanged groups, and the batch's audit log entry
  lists the skipped ones. Inside a transaction the batch also writes the kept documents
  (a field set and unset again, so the document ends unchanged): a writer
  that deletes a kept document concurrently then meets a write conflict
  instead of committing beside us, so the two can never together empty a
  slot without one of them seeing the other.
* Every archive query is served by an index (``by_key``): lookups go by
  (request_id, collection, document._id), never by the sub-document ``_id``.

Limit: without transactions (epoch 0, or a standalone server) the slot check
and the delete are two statements, so a writer deleting the kept document in
between can still empty that slot; the window is one round trip.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from auditsvc.domain.values import Resolution, Strategy
from auditsvc.storage.mongo import archive_restore as _restore
from auditsvc.storage.mongo.candle_store import fingerprint
from auditsvc.storage.mongo.database import ARCHIVE, AUDIT_LOG, Database, to_dt, to_ms
from auditsvc.storage.mongo.settled_store import mark_rewritten

# Set and unset on a kept document inside the batch's transaction; never committed.
GUARD_FIELD = "_auditsvc_removal_guard"
# One document per candle collection while a removal runs on it, from any process.
REMOVAL_CLAIMS = "removal_claims"


class MongoDuplicateStore:
    def __init__(self, database: Database, replica_id: str) -> None:
        self._db = database.db
        self._replica_id = replica_id

    async def guard(
        self,
        collection: str,
        symbol: str,
        batch: list[Resolution],
        version_field: str | None,
        session: Any = None,
    ) -> tuple[list[Resolution], list[Resolution]]:
        """Re-reads the batch's slots; returns (groups unchanged since the grouping,
        groups that changed).

        A group is unchanged when its slot holds exactly the documents it was
        grouped with (same ``_id``s, none gone, moved away or added) and each
        still has the fingerprint it was grouped with (its version where one is
        configured, else its whole content). Anything else is a change, and the
        group is left as it is: a correction that landed on a copy marked for
        removal is never deleted, and a moved copy never empties its new slot.
        """
        if not batch:
            return [], []
        stamps = sorted({r.timestamp_ms for r in batch})
        # One query on (symbol, timestamp): documents that moved away are missing
        # from it, documents that moved in are extra.
        found: dict[int, dict[Any, str]] = {}
        query = {"symbol": symbol, "timestamp": {"$in": [to_dt(t) for t in stamps]}}
        for d in await self._db[collection].find(query, session=session).to_list(None):
            found.setdefault(to_ms(d["timestamp"]), {})[d["_id"]] = fingerprint(d, version_field)
        safe: list[Resolution] = []
        changed: list[Resolution] = []
        for r in batch:
            shown = {ref.doc_id: ref.fingerprint for ref in (r.kept, *r.removed)}
            (safe if found.get(r.timestamp_ms) == shown else changed).append(r)
        if session is not None and safe:
            # Write the kept documents so a concurrent delete of one conflicts with
            # this batch (snapshot isolation does not check what we only read); the
            # removed ones conflict through their delete.
            ids = [r.kept.doc_id for r in safe]
            col = self._db[collection]
            await col.update_many(
                {"_id": {"$in": ids}}, {"$set": {GUARD_FIELD: True}}, session=session
            )
            await col.update_many(
                {"_id": {"$in": ids}}, {"$unset": {GUARD_FIELD: ""}}, session=session
            )
        return safe, changed

    async def archive(
        self,
        collection: str,
        batch: list[Resolution],
        *,
        request_id: str,
        strategy: Strategy,
        epoch: int,
        timeframe: str = "",
        session: Any = None,
    ) -> int:
        """Copies each document to be removed, whole, into the archive; returns new
        copies. ``timeframe`` names the series with the symbol, for the restore."""
        kept_by_id = {ref.doc_id: r for r in batch for ref in r.removed}
        cursor = self._db[collection].find({"_id": {"$in": list(kept_by_id)}}, session=session)
        now = dt.datetime.now(dt.UTC)
        ops = []
        for doc in await cursor.to_list(None):
            resolution = kept_by_id[doc["_id"]]
            entry = {
                "request_id": request_id,
                "collection": collection,
                "strategy": strategy.value,
                "kept_id": resolution.kept.doc_id,
                "timestamp": doc.get("timestamp"),
                "symbol": doc.get("symbol"),
                "timeframe": timeframe,
                "epoch": epoch,
                "removed_at": now,
                "removed_by": self._replica_id,
                "document": doc,
            }
            key = {"request_id": request_id, "collection": collection, "doc_id": doc["_id"]}
            # Upsert on the archive key, found through the by_key index: a replayed
            # batch archives nothing twice, and a document removed again after a
            # restore gets a fresh copy that restore will find (restored_at cleared).
            ops.append(
                UpdateOne(
                    _key_filter(request_id, collection, doc["_id"]),
                    {"$set": entry, "$unset": {"restored_at": ""}, "$setOnInsert": {"_id": key}},
                    upsert=True,
                )
            )
        if not ops:
            return 0
        result = await self._db[ARCHIVE].bulk_write(ops, ordered=False, session=session)
        return int(result.upserted_count)

    async def delete(
        self,
        collection: str,
        batch: list[Resolution],
        *,
        request_id: str,
        strategy: Strategy,
        epoch: int,
        archived: int,
        skipped: Sequence[int] = (),
        session: Any = None,
    ) -> int:
        """Deletes only documents the archive holds for this request, then logs the batch
        with the timestamps (ms) of its ``skipped`` groups (changed since the grouping).

        Checking the archive here, not trusting the caller, is what makes
        "archived before deleted" hold even if a batch is retried or replayed.
        """
        ids = [ref.doc_id for r in batch for ref in r.removed]
        safe = [
            d["document"]["_id"]
            for d in await self._db[ARCHIVE]
            .find(
                _key_filter(request_id, collection, {"$in": ids}),
                {"document._id": 1, "restored_at": 1},
                session=session,
            )
            .to_list(None)
            if d.get("restored_at") is None
        ]
        deleted = 0
        if safe:
            outcome = await self._db[collection].delete_many(
                {"_id": {"$in": safe}}, session=session
            )
            deleted = outcome.deleted_count
        await self._db[AUDIT_LOG].insert_one(
            {
                "at": dt.datetime.now(dt.UTC),
                "action": "remove_duplicates",
                "request_id": request_id,
                "collection": collection,
                "strategy": strategy.value,
                "groups": len(batch) + len(skipped),
                "skipped": len(skipped),
                "skipped_timestamps": [to_dt(t) for t in skipped],
                "archived": archived,
                "deleted": deleted,
                "epoch": epoch,
                "replica_id": self._replica_id,
            },
            session=session,
        )
        return deleted

    async def claim(self, collection: str, owner: str, ttl_ms: int) -> bool:
        """Claims (or extends) ``collection`` for one removal; False while another holds it.

        Expiry is judged by the database's clock, so a holder that died frees
        the collection ``ttl_ms`` after its last extension.
        """
        mine_or_expired = {
            "$or": [
                {"$eq": ["$owner", owner]},
                {"$lte": [{"$toLong": {"$ifNull": ["$expires_at", 0]}}, {"$toLong": "$$NOW"}]},
            ]
        }
        try:
            doc = await self._db[REMOVAL_CLAIMS].find_one_and_update(
                {"_id": collection, "$expr": mine_or_expired},
                [{"$set": {"owner": owner, "expires_at": {"$add": ["$$NOW", ttl_ms]}}}],
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # held by another live owner: the upsert met its document
        return doc is not None and doc.get("owner") == owner

    async def release(self, collection: str, owner: str) -> None:
        await self._db[REMOVAL_CLAIMS].delete_one({"_id": collection, "owner": owner})

    async def mark_rewritten(self, symbol: str, timeframe: str, session: Any = None) -> None:
        """The series' settled record no longer vouches for its documents (see
        ``settled_store``); called in the batch that deleted some of them."""
        await mark_rewritten(self._db, [(symbol, timeframe)], session)

    async def known(self, request_id: str) -> bool:
        """Whether any removal was ever archived under ``request_id``."""
        return await _restore.known(self._db, request_id)

    async def restore(self, request_id: str) -> tuple[int, int]:
        """Puts archived documents back in time-bounded batches; (restored, already_present)."""
        return await _restore.restore(self._db, request_id, self._replica_id)


def _key_filter(request_id: str, collection: str, doc_id: Any) -> dict[str, Any]:
    """The archive key as top-level fields, in by_key's order (an index prefix lookup)."""
    return {"request_id": request_id, "collection": collection, "document._id": doc_id}
