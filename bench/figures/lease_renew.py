"""Lease renew latency: MongoLeaseStore.try_acquire by the holder, in this process.

One store on a fresh database; the first call acquires, then ``lease_renewals``
sequential renewals are timed one by one (after 20 untimed ones that warm the
pool). This is the single-document find_one_and_update that decides whether a
leader keeps its term, so its tail matters more than its mean. Not one of the
eight figures: it runs only in the driver A/B (``python -m bench --driver-ab``).
"""

from __future__ import annotations

import time
from typing import Any

from auditsvc.mongo.client import connect
from auditsvc.mongo.lease import MongoLeaseStore
from bench.context import Context, NotMeasured
from bench.figures.common import MET, result
from bench.stats import latency_ms

KEY = "lease_renew"
TITLE = "Lease renew latency"
TARGET = "recorded (no target): p50 and p99 of one renewal"
WARMUP = 20
DURATION_MS = 60_000


async def run(ctx: Context) -> dict[str, Any]:
    n = ctx.sizes.lease_renewals
    database = connect(ctx.service_uri, ctx.database("lease"), 5000, driver=ctx.driver)
    try:
        store = MongoLeaseStore(database, "bench-lease")
        took: list[float] = []
        for i in range(WARMUP + n):
            began = time.perf_counter()
            lease = await store.try_acquire("bench", "127.0.0.1:1", DURATION_MS)
            elapsed = time.perf_counter() - began
            if lease is None or lease.epoch != 1:
                raise NotMeasured(f"renewal {i} lost the lease: {lease}")
            if i >= WARMUP:
                took.append(elapsed)
    finally:
        await database.close()
    summary = latency_ms(took)
    return result(
        target=TARGET,
        summary=f"{n} renewals: p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms",
        verdict=MET,
        ratio=None,
        ratio_of="",
        details={"renew_ms": summary, "driver": ctx.driver},
    )
