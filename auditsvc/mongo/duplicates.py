"""Archive-then-delete of duplicate candles, restore, and the audit log.

Each batch archives whole documents before deleting them. The archive key is
(request_id, collection, _id), so re-running an interrupted request archives
nothing twice; with transactions a batch is all-or-nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.errors import DuplicateKeyError

from auditsvc.audit.models import Resolution, Strategy
from auditsvc.mongo.client import ARCHIVE, AUDIT_LOG, Database


class MongoDuplicateStore:
    def __init__(self, database: Database, replica_id: str) -> None:
        self._db = database.db
        self._replica_id = replica_id

    async def archive_and_delete(
        self,
        collection: str,
        batch: list[Resolution],
        *,
        request_id: str,
        strategy: Strategy,
        epoch: int,
        session: Any = None,
    ) -> tuple[int, int]:
        """Returns (archived, deleted) for this batch."""
        kept_by_id = {ref.doc_id: r for r in batch for ref in r.removed}
        ids = list(kept_by_id)
        docs = await self._db[collection].find({"_id": {"$in": ids}}, session=session).to_list(None)
        now = dt.datetime.now(dt.UTC)
        archived = 0
        for doc in docs:
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
            result = await self._db[ARCHIVE].update_one(
                {"_id": key}, {"$setOnInsert": entry}, upsert=True, session=session
            )
            archived += 1 if result.upserted_id is not None else 0
        present = [d["_id"] for d in docs]
        deleted = 0
        if present:
            outcome = await self._db[collection].delete_many(
                {"_id": {"$in": present}}, session=session
            )
            deleted = outcome.deleted_count
        await self._db[AUDIT_LOG].insert_one(
            {
                "at": now,
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
        return archived, deleted

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
