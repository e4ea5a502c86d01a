"""One racer process for test_lease_race: hammers the lease and prints each grant."""

from __future__ import annotations

import asyncio
import json
import random
import sys

from auditsvc.storage.mongo.database import connect
from auditsvc.storage.mongo.leadership_store import MongoLeadershipStore


async def race(uri: str, database: str, holder: str, rounds: int) -> None:
    handle = connect(uri, database, 5000)
    store = MongoLeadershipStore(handle, "race", holder, holder=holder)
    rng = random.Random(holder)
    try:
        for _ in range(rounds):
            try:
                lease = await store.try_acquire(holder, rng.randint(5, 40))
            except Exception as exc:  # an unknown outcome is allowed; a wrong one is not
                print(json.dumps({"error": type(exc).__name__}), flush=True)
                continue
            if lease is not None:
                print(
                    json.dumps({"epoch": lease.epoch, "holder": lease.holder, "now": lease.now_ms}),
                    flush=True,
                )
                if rng.random() < 0.3:
                    await store.release(lease.epoch)
            await asyncio.sleep(rng.random() / 200)
    finally:
        await handle.close()


if __name__ == "__main__":
    asyncio.run(race(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
