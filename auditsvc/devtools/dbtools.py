"""One-shot database commands: setup-db, restore-duplicates, seed-demo."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter

from auditsvc.devtools.demo import demo_price, demo_series, plant_demo_anomalies
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import MongoDuplicateStore, MongoLeadershipStore, connect
from auditsvc.storage.mongo.database import ensure_candle_index, ensure_indexes, ensure_time_index

_TIMEOUT = 30.0
# restore-duplicates: the request id names no archived removal. Equal to
# cli.EXIT_NOT_FOUND (the exit-code table); not imported, so that the CLI keeps
# importing this module only when a database command runs.
EXIT_UNKNOWN_REQUEST = 4


async def setup_db(settings: Settings, *, candle_indexes: bool) -> int:
    database = connect(settings.mongo.uri, settings.mongo.database, settings.mongo.timeout_ms)
    try:
        async with asyncio.timeout(_TIMEOUT):
            for name in await ensure_indexes(database):
                print(f"index ok: {name}")
            if candle_indexes:
                for sym in settings.audit.symbols:
                    for tf in settings.audit.timeframes:
                        index = await ensure_candle_index(
                            database, settings.audit.collection_for(sym, tf)
                        )
                        print(f"index ok: {index}")
                if "{symbol}" not in settings.audit.collection_template:
                    # Symbols share collections: a cycle reads their tails by time.
                    for tf in settings.audit.timeframes:
                        collection = settings.audit.collection_for("", tf)
                        print(f"index ok: {await ensure_time_index(database, collection)}")
            # Verify with a lease round trip on a scratch election, never the real one.
            election = f"setup-check-{uuid.uuid4().hex[:8]}"
            probe = MongoLeadershipStore(database, election, "setup-db")
            lease = await probe.try_acquire("setup", 5_000)
            if lease is None or not await probe.release(lease.epoch):
                print("lease round trip FAILED")
                return 1
            await database.db["leader_election"].delete_one({"_id": election})
            print(f"lease round trip ok (database clock {lease.now_ms} ms)")
    finally:
        await database.close()
    return 0


async def restore(settings: Settings, request_id: str) -> int:
    """Exit 0 when restored (or nothing left to restore), EXIT_UNKNOWN_REQUEST when the
    archive has never held anything for ``request_id`` (a typo must not look like success).
    """
    database = connect(settings.mongo.uri, settings.mongo.database, settings.mongo.timeout_ms)
    try:
        store = MongoDuplicateStore(database, settings.server.replica_id)
        if not await store.known(request_id):
            print(
                f"auditsvc: no archived duplicates for request id {request_id!r}; nothing restored",
                file=sys.stderr,
            )
            return EXIT_UNKNOWN_REQUEST
        restored, present = await store.restore(request_id)
    finally:
        await database.close()
    print(f"restored {restored} documents; {present} were already present")
    return 0


async def seed_demo(settings: Settings, *, force: bool, end_ms: int | None = None) -> int:
    import time

    end = end_ms if end_ms is not None else int(time.time() * 1000)
    audit = settings.audit
    database = connect(settings.mongo.uri, settings.mongo.database, settings.mongo.timeout_ms)
    try:
        for i, sym in enumerate(audit.symbols):
            series = {}
            for tf in audit.timeframes:
                slots = 1440 if tf == "1m" else 48
                series[tf] = demo_series(sym, tf, end, slots, price=demo_price(audit.symbols, sym))
            # The last symbol also gets bad candles of each kind; the first stays clean
            # for the README's walkthrough of gaps, LATE and the trade gate.
            planted = plant_demo_anomalies(
                {tf: docs for tf, (docs, _) in series.items()}
                if i == len(audit.symbols) - 1
                else {}
            )
            for tf, (docs, expected) in series.items():
                col = database.db[audit.collection_for(sym, tf)]
                if not force and await col.estimated_document_count() > 0:
                    print(f"{col.name}: already seeded")
                    continue
                await col.delete_many({"symbol": sym})
                await col.insert_many(docs)
                await ensure_candle_index(database, col.name)
                bad = Counter(rule.name for _, rule in planted.get(tf, []))
                print(
                    f"{col.name}: {len(docs)} candles, {len(expected.gaps)} gaps, "
                    f"{len(expected.duplicate_slots)} duplicated slots"
                    + (f", bad candles: {dict(bad)}" if bad else "")
                )
    finally:
        await database.close()
    return 0
