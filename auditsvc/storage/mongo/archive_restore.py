"""Putting archived duplicates back, in batches bounded in time and count.

Each batch takes the next archive entries of the request not yet restored
(one cursor over the ``by_key`` index), inserts their documents with one unordered
bulk insert per collection, and marks them restored (by each entry's ``by_key`` key).

Each batch that put documents back then bumps the ``rewrites`` of their series
(``settled_store.mark_rewritten``), so the next cycle scans them whole instead
of trusting a settled record made while they were gone. Entries archived
before the archive named a timeframe mark every series of their symbol whose
record describes their collection.

Guarantees: idempotent and resumable. A document already present (restored
before, or never really gone) is counted as present, not duplicated; an entry
is marked restored only after its document is back, so a crash between the
two re-inserts nothing twice (the insert meets a duplicate key) and the next
run marks it. Batch sizes adapt to what each batch takes
(:class:`~auditsvc.domain.batch_sizing.AdaptiveBatch`).

Restore shares the database with a running leader, whose lease renewals must
not queue behind it: after each batch it pauses twice as long as the batch
took (``PAUSE_RATIO``), and keeps batches near 0.1 s, so it holds at
most about a third of the server's time.

Limit: restore is not fenced; it runs from the command line, alongside the
leader, and writes only documents the archive holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from typing import Any

from pymongo.errors import BulkWriteError

from auditsvc.domain.batch_sizing import AdaptiveBatch
from auditsvc.storage.mongo.database import ARCHIVE, AUDIT_LOG, SERIES
from auditsvc.storage.mongo.settled_store import REWRITES, mark_rewritten

DUPLICATE_KEY = 11000
# Seconds of pause per second of batch: leaves the database to other clients
# (on a loaded single-process server, a 1:1 duty cycle still starved renewals).
PAUSE_RATIO = 2.0
# Short batches: each is two server commands (one insert, one update) that a
# lease call may have to wait behind. At 0.25 s the bench's leader (heartbeat
# 1 s) lost its lease 44 times during a 10,000-document restore on SecantusDB.
TARGET_SECONDS = 0.1


async def known(db: Any, request_id: str) -> bool:
    """Whether the archive holds any entry, restored or not, for ``request_id``."""
    return await db[ARCHIVE].find_one({"request_id": request_id}, {"_id": 1}) is not None


async def restore(
    db: Any, request_id: str, replica_id: str, sizer: AdaptiveBatch | None = None
) -> tuple[int, int]:
    """Puts archived documents back; returns (restored, already_present)."""
    sizer = sizer or AdaptiveBatch(initial=50, maximum=500, target_seconds=TARGET_SECONDS)
    restored = present = 0
    # One cursor for the whole restore, walked on by_key: restored_at (which we
    # set as we go) is not in its key, so no entry moves ahead of the cursor and
    # comes back twice; and the server finds the request's entries once, not per batch.
    cursor = (
        db[ARCHIVE]
        .find(
            {"request_id": request_id, "restored_at": None},
            {"collection": 1, "document": 1, "symbol": 1, "timeframe": 1},
        )
        .hint("by_key")
    )
    while True:
        started = time.monotonic()
        entries = await cursor.to_list(sizer.size)
        if not entries:
            break
        by_collection: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            by_collection[entry["collection"]].append(entry)
        now = dt.datetime.now(dt.UTC)
        for collection, batch in by_collection.items():
            docs = [entry["document"] for entry in batch]
            inserted = await _insert(db[collection], docs)
            restored += inserted
            present += len(docs) - inserted
            if inserted:
                await _mark(db, collection, batch)
            # One update for the batch, on the by_key index: a server may commit each
            # statement of a bulk write on its own (SecantusDB journals each: 20 ms
            # apiece). Not by the entries' _id: a sub-document, which not every server
            # serves from the _id index (SecantusDB scanned the archive for each).
            await db[ARCHIVE].update_many(
                {
                    "request_id": request_id,
                    "collection": collection,
                    "document._id": {"$in": [entry["document"]["_id"] for entry in batch]},
                },
                {"$set": {"restored_at": now}},
            )
        took = time.monotonic() - started
        sizer.record(len(entries), took)
        await asyncio.sleep(took * PAUSE_RATIO)
    await db[AUDIT_LOG].insert_one(
        {
            "at": dt.datetime.now(dt.UTC),
            "action": "restore_duplicates",
            "request_id": request_id,
            "restored": restored,
            "already_present": present,
            "replica_id": replica_id,
            "epoch": 0,
        }
    )
    return restored, present


async def _mark(db: Any, collection: str, batch: list[dict[str, Any]]) -> None:
    """Bumps the rewrites of the series these entries' documents belong to."""
    keys = {(e["symbol"], e["timeframe"]) for e in batch if e.get("symbol") and e.get("timeframe")}
    await mark_rewritten(db, sorted(keys))
    unnamed = sorted({e["symbol"] for e in batch if e.get("symbol") and not e.get("timeframe")})
    if unnamed:  # archived before entries named their timeframe
        await db[SERIES].update_many(
            {"symbol": {"$in": unnamed}, "settled.collection": collection},
            {"$inc": {REWRITES: 1}},
        )


async def _insert(collection: Any, docs: list[dict[str, Any]]) -> int:
    """Inserts what is missing; returns how many were inserted. Duplicates are not errors."""
    try:
        result = await collection.insert_many(docs, ordered=False)
        return len(result.inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(exc.details.get("nInserted", 0))
