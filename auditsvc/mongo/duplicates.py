"""Archive-then-delete of duplicate candles, restore, and the audit log.

Each batch archives whole documents before deleting them. The archive key is
(request_id, collection, _id), so re-running an interrupted request archives
nothing twice; with transactions a batch is all-or-nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from auditsvc.audit.models import Resolution, Strategy
from auditsvc.mongo.client import ARCHIVE, AUDIT_LOG, Database


class MongoDuplicateStore:
    def __init__(self, database: Database, replica_id: str) -> None:
        self._db = database.db
        self._replica_id = replica_id

    async def archive(
        self,
        collection: str,
        batch: list[Resolution],
        *,
        request_id: str,
        strategy: Strategy,
        epoch: int,
        session: Any = None,
    ) -> int:
        """Copies each document to be removed, whole, into the archive; returns new copies."""
        kept_by_id = {ref.doc_id: r for r in batch for ref in r.removed}
        cursor = self._db[collection].find({"_id": {"$in": list(kept_by_id)}}, session=session)
        now = dt.datetime.now(dt.UTC)
        ops = []
        for doc in await cursor.to_list(None):
            resolution = kept_by_id[doc["_id"]]
            key = {"request_id": request_id, "collection": collection, "doc_id": doc["_id"]}
            entry = {
                "request_id": request_id,
                "collection": collection,
                "strategy": strategy.value,
                "kept_id": resolution.kept.doc_id,
                "timestamp": doc.get("timestamp"),
                "symbol": doc.get("symbol"),
                "epoch": epoch,
                "removed_at": now,
                "removed_by": self._replica_id,
                "document": doc,
            }
            # Upsert on the archive key: a replayed batch archives nothing twice,
            # and a document removed again after a restore gets a fresh copy
            # that restore will find (restored_at is cleared).
            ops.append(
                UpdateOne({"_id": key}, {"$set": entry, "$unset": {"restored_at": ""}}, upsert=True)
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
        session: Any = None,
    ) -> int:
        """Deletes only documents the archive holds for this request, then logs the batch.

        Checking the archive here, not trusting the caller, is what makes
        "archived before deleted" hold even if a batch is retried or replayed.
        """
        ids = [ref.doc_id for r in batch for ref in r.removed]
        keys = [{"request_id": request_id, "collection": collection, "doc_id": i} for i in ids]
        safe = [
            d["_id"]["doc_id"]
            for d in await self._db[ARCHIVE]
            .find({"_id": {"$in": keys}, "restored_at": None}, {"_id": 1}, session=session)
            .to_list(None)
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
                "groups": len(batch),
                "archived": archived,
                "deleted": deleted,
                "epoch": epoch,
                "replica_id": self._replica_id,
            },
            session=session,
        )
        return deleted

    async def restore(self, request_id: str) -> tuple[int, int]:
        """Puts archived documents back; returns (restored, already_present)."""
        restored = present = 0
        cursor = self._db[ARCHIVE].find({"request_id": request_id, "restored_at": None})
        async for entry in cursor:
            doc = entry["document"]
            try:
                await self._db[entry["collection"]].insert_one(doc)
                restored += 1
            except DuplicateKeyError:
                present += 1
            await self._db[ARCHIVE].update_one(
                {"_id": entry["_id"]}, {"$set": {"restored_at": dt.datetime.now(dt.UTC)}}
            )
        await self._db[AUDIT_LOG].insert_one(
            {
                "at": dt.datetime.now(dt.UTC),
                "action": "restore_duplicates",
                "request_id": request_id,
                "restored": restored,
                "already_present": present,
                "replica_id": self._replica_id,
                "epoch": 0,
            }
        )
        return restored, present
