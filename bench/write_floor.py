"""The write floor of a steady cycle: what storing one series' result costs the server.

A steady incremental cycle reads a few candles per series and then stores, per
series, one document (its score and settled record) through the store the
cycle uses (``MongoSettledStore.save_chunk``, 500 series per call, outside a
transaction as figure 8's standalone replicas write). Timing that call alone,
on the same server and run as figure 8, gives the floor below which no steady
cycle can go while every series stores a score every cycle.

For comparison it also times the same content stored as ONE document per 500
series (a form auditsvc does not use: readers, the live tail and the health
stream address series documents one by one). The gap between the two is what
a redesign of the series store could win; see docs/SCALING.md.
"""

from __future__ import annotations

import time
from typing import Any

from auditsvc.domain.records import ScoreRecord, SeriesReport
from auditsvc.domain.series_state import SeriesState
from auditsvc.domain.settled import Settled
from auditsvc.domain.values import HealthScore, Window
from auditsvc.storage.mongo import documents as codec
from auditsvc.storage.mongo.database import Database, ensure_indexes
from auditsvc.storage.mongo.settled_store import MongoSettledStore, settled_doc
from auditsvc.usecases.sweep import CHUNK  # the cycle's series per store call
from bench.stats import median, rounded

SLOT = 60_000
PERFECT = HealthScore(1.0, 1.0, 1.0, 1.0, 0, 0)


def _reports(symbols: list[str], end_ms: int, cycle: str) -> list[SeriesReport]:
    return [
        SeriesReport(
            symbol=s,
            timeframe="1m",
            window_start_ms=end_ms - 24 * SLOT,
            window_end_ms=end_ms,
            expected_candles=24,
            present_candles=24,
            missing_candles=0,
            gap_count=0,
            duplicate_groups=0,
            surplus_documents=0,
            misaligned_candles=0,
            backfills_requested=0,
            backfills_skipped=0,
            health=ScoreRecord(s, "1m", PERFECT, end_ms, cycle, SeriesState.LIVE, end_ms - SLOT),
        )
        for s in symbols
    ]


async def write_floor(database: Database, series: int, rounds: int = 3) -> dict[str, Any]:
    """Median ms per series of each form over ``rounds`` rewrites of ``series`` series."""
    await ensure_indexes(database)
    store = MongoSettledStore(database)
    symbols = [f"W{i:05d}" for i in range(series)]
    per_series: dict[str, list[float]] = {"series_documents": [], "chunk_documents": []}
    end = time.time_ns() // 1_000_000 // SLOT * SLOT
    for k in range(rounds + 1):  # the first round creates the documents, untimed
        end += SLOT
        reports = _reports(symbols, end, f"floor-{k}")
        settled = {s: Settled(Window(end - 24 * SLOT, end), (), (), (), k) for s in symbols}
        began = time.perf_counter()
        for first in range(0, series, CHUNK):
            chunk = reports[first : first + CHUNK]
            await store.save_chunk(
                chunk, settled, collection="klines_1m", cycle_id=f"floor-{k}", epoch=0
            )
        took = time.perf_counter() - began
        began = time.perf_counter()
        for first in range(0, series, CHUNK):
            rows = [
                {**codec.score_doc(r.health), "settled": settled_doc(settled[r.symbol])}
                for r in reports[first : first + CHUNK]
            ]
            await database.db["bench_floor_chunks"].replace_one(
                {"_id": first}, {"rows": rows}, upsert=True
            )
        chunked = time.perf_counter() - began
        if k:
            per_series["series_documents"].append(took / series * 1000)
            per_series["chunk_documents"].append(chunked / series * 1000)
    one = median(per_series["series_documents"])
    chunk = median(per_series["chunk_documents"])
    return {
        "series": series,
        "rounds": rounds,
        "series_document_ms": rounded(one, 3),
        "chunk_document_ms": rounded(chunk, 3),
        "series_document_over_chunk": rounded(one / chunk, 1) if chunk else None,
    }
