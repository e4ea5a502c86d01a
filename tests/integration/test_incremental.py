"""Incremental default-window cycles against SecantusDB, over the wire.

A RunAudit without times reads only each series' open gaps and the tail after the
recheck horizon; its reports must equal a full scan's. The live tail is off: its
scores would race the reports compared."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.records import Cycle
from auditsvc.storage.mongo import (
    MongoCandleStore,
    MongoDuplicateStore,
    candle_store,
    connect,
)
from auditsvc.storage.mongo.database import GAPS, SERIES, ensure_time_index, to_dt
from tests.integration.standalone import standalone_auditor

TIMEOUT = 60.0
M = 60_000
SLOTS = 180  # AUDIT_LOOKBACK of 3 h in 1m slots
ENV = {
    "LIVE_MODE": "off",
    "AUDIT_TIMEFRAMES": "1m",
    "AUDIT_LOOKBACK": str(SLOTS * 60),
    "AUDIT_RECHECK": "1800",
    "AUDIT_INGEST_GRACE": "0",
}


def window_end() -> int:
    return int(time.time() * 1000) // M * M


async def seed(db: Any, collection: str, symbol: str, end: int, skip: set[int]) -> None:
    """1m candles for the SLOTS + 10 slots before ``end``, except slot numbers in ``skip``
    (0 is the oldest), plus a few slots ahead so a minute boundary changes nothing."""
    docs = [
        {"symbol": symbol, "timestamp": to_dt(end - (SLOTS + 10 - i) * M)}
        for i in range(SLOTS + 13)
        if i not in skip
    ]
    await asyncio.wait_for(db[collection].insert_many(docs), TIMEOUT)


def comparable(report: pb.SeriesReport) -> tuple[Any, ...]:
    return (
        report.symbol,
        report.window_start.ToMilliseconds(),
        report.window_end.ToMilliseconds(),
        report.expected_candles,
        report.present_candles,
        report.gap_count,
        report.duplicate_groups,
        report.misaligned_candles,
    )


async def audit(replica: Any, **kwargs: Any) -> pb.AuditCycle:
    reply = await replica.stub.RunAudit(pb.RunAuditRequest(**kwargs), timeout=TIMEOUT)
    return reply.cycle


async def full_scan(replica: Any, cycle: pb.AuditCycle) -> list[tuple[Any, ...]]:
    """The same windows audited with explicit times: always a full scan."""
    first = cycle.series[0]
    again = await audit(replica, start_time=first.window_start, end_time=first.window_end)
    return [comparable(r) for r in again.series]


class TestIncrementalCycles:
    """Default-window RunAudits are incremental and still equal a full scan."""

    async def test_fresh_deletion_in_recheck_horizon(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """A candle deleted 10 minutes back (inside AUDIT_RECHECK) is a gap at the next cycle."""
        replica = await start_replica(make_settings(AUDIT_SYMBOLS="BTCUSDT", **ENV))
        db = replica.app.database.db
        end = window_end()
        await seed(db, "candles_BTCUSDT_1m", "BTCUSDT", end, set())
        first = await audit(replica)
        assert first.series[0].gap_count == 0
        gone = to_dt(first.series[0].window_end.ToMilliseconds() - 10 * M)
        await db["candles_BTCUSDT_1m"].delete_one({"timestamp": gone})
        second = await audit(replica)
        series = await db[SERIES].find_one({"_id": "BTCUSDT|1m"})
        assert series is not None and series["settled"]["since_full"] == 1  # it was incremental
        (report,) = second.series
        assert report.gap_count == 1
        assert await db[GAPS].count_documents({"start_time": gone}) == 1
        assert [comparable(r) for r in second.series] == await full_scan(replica, second)

    async def test_backfilled_old_gap_disappears(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """A gap two hours back, far before the recheck horizon, shrinks as a backfill fills
        part of it (keeping its record) and is FILLED, no longer missing, once the rest is."""
        replica = await start_replica(make_settings(AUDIT_SYMBOLS="BTCUSDT", **ENV))
        db = replica.app.database.db
        end = window_end()
        await seed(db, "candles_BTCUSDT_1m", "BTCUSDT", end, {60, 61, 62})
        first = await audit(replica)
        assert first.series[0].gap_count == 1
        assert await db[GAPS].count_documents({}) == 1
        filled = [
            {"symbol": "BTCUSDT", "timestamp": to_dt(end - (SLOTS + 10 - i) * M)}
            for i in (60, 61, 62)
        ]
        await db["candles_BTCUSDT_1m"].insert_many(filled[:2])
        partial = await audit(replica)
        assert (partial.series[0].gap_count, partial.series[0].missing_candles) == (1, 1)
        assert await db[GAPS].count_documents({}) == 1  # the same record, shrunk
        await db["candles_BTCUSDT_1m"].insert_many(filled[2:])
        second = await audit(replica)
        series = await db[SERIES].find_one({"_id": "BTCUSDT|1m"})
        assert series is not None and series["settled"]["since_full"] == 2
        assert second.series[0].gap_count == 0
        # Kept as history (GAP_HISTORY_RETENTION), out of the default listing.
        assert await db[GAPS].count_documents({"state": {"$ne": "filled"}}) == 0
        assert await db[GAPS].count_documents({"state": "filled"}) == 1
        assert [comparable(r) for r in second.series] == await full_scan(replica, second)

    @pytest.mark.parametrize("time_index", [False, True])
    async def test_shared_collection_batched(
        self, make_settings: Any, start_replica: Any, time_index: bool
    ) -> None:
        """Symbols sharing klines_{timeframe}, read by symbol or (with a timestamp index) by
        time: reports equal a full scan, cycle after cycle."""
        symbols = [f"S{i}USDT" for i in range(6)]
        replica = await start_replica(
            make_settings(
                AUDIT_SYMBOLS=",".join(symbols),
                CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}",
                AUDIT_FULL_SCAN_EVERY="3",
                **ENV,
            )
        )
        db = replica.app.database.db
        end = window_end()
        for i, symbol in enumerate(symbols):
            await seed(db, "klines_1m", symbol, end, {10 * i, 10 * i + 1, SLOTS - i})
        await db["klines_1m"].insert_one({"symbol": "NOTAUDITED", "timestamp": to_dt(end - M)})
        if time_index:
            await ensure_time_index(replica.app.database, "klines_1m")
        for n in range(4):
            cycle = await audit(replica)
            assert [comparable(r) for r in cycle.series] == await full_scan(replica, cycle)
            assert [r.symbol for r in cycle.series] == symbols
            if n == 0:  # a backfill of S1USDT's old gap, seen by the incremental cycle
                old = [to_dt(end - (SLOTS + 10 - k) * M) for k in (10, 11)]
                await db["klines_1m"].insert_many(
                    [{"symbol": symbols[1], "timestamp": t} for t in old]
                )
        kinds = {
            sample.labels["kind"]: sample.value
            for metric in replica.app.metrics.registry.collect()
            if metric.name == "data_manager_audit_series_scans"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        assert kinds["incremental"] > 0
        assert kinds["full"] > 0


class CountingCandles(MongoCandleStore):
    """The real candle store, counting the queries a cycle makes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.many = 0
        self.single = 0

    def read_many(self, *args: Any) -> Any:
        self.many += 1
        return super().read_many(*args)

    def timestamps(self, *args: Any) -> Any:
        self.single += 1
        return super().timestamps(*args)


class TimeReadSpy(MongoCandleStore):
    """The real candle store, counting its slices read by time and its counts."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.by_time = 0
        self.counts = 0

    def _slice(self, *args: Any) -> Any:
        self.by_time += 1
        return super()._slice(*args)

    async def _mostly_ours(self, *args: Any) -> bool:
        self.counts += 1
        return await super()._mostly_ours(*args)


AUDITED = ["A1USDT", "A2USDT", "A3USDT"]


@contextlib.asynccontextmanager
async def shared_klines(
    make_settings: Any,
    skip: set[int],
    symbols: Sequence[str] = AUDITED,
    store: type[MongoCandleStore] = TimeReadSpy,
    time_index: bool = True,
) -> AsyncIterator[tuple[Any, int, Any, Callable[[], Awaitable[Cycle]]]]:
    """``symbols`` in klines_1m (with the time index unless told not), each missing
    the slots ``skip``: yields the database, the window end, the candle store (a
    ``store``) and a runner of default-window cycles on it."""
    settings = make_settings(
        AUDIT_SYMBOLS=",".join(symbols), CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}", **ENV
    )
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        end = window_end()
        for symbol in symbols:
            await seed(database.db, "klines_1m", symbol, end, skip)
        if time_index:
            await ensure_time_index(database, "klines_1m")
        candles = store(database, settings.audit.collection_template)
        audits = standalone_auditor(settings, database, candles)

        async def cycle() -> Cycle:
            selection = audits.select((), (), None, None)
            return await asyncio.wait_for(
                audits.run_cycle(selection, trigger="rpc", default_window=True), TIMEOUT
            )

        yield database.db, end, candles, cycle
    finally:
        await database.close()


async def insert_others(db: Any, end: int, slots: int) -> None:
    """80 symbols not audited, in klines_1m's last ``slots`` slots before ``end``."""
    others = [
        {"symbol": f"OTHER{i}", "timestamp": to_dt(end - k * M)}
        for i in range(80)
        for k in range(1, slots + 1)
    ]
    await asyncio.wait_for(db["klines_1m"].insert_many(others), TIMEOUT)


class TestBatchedReads:
    """Symbols sharing a collection are read with one query per cycle, not one per series."""

    @pytest.mark.parametrize(("others", "by_time"), [(0, 1), (40, 0)])
    async def test_time_read_only_when_the_range_is_mostly_ours(
        self, make_settings: Any, others: int, by_time: int
    ) -> None:
        """3 audited symbols alone in klines_1m share one time-range read; beside 40
        symbols not audited, each is read on its own (the shared read would return
        all 43), with the same reports."""
        async with shared_klines(make_settings, {20, 21}) as (db, end, candles, cycle):
            for i in range(others):
                await seed(db, "klines_1m", f"OTHER{i}", end, set())
            done = await cycle()
            assert [r.symbol for r in done.series] == AUDITED
            assert [(r.gap_count, r.missing_candles) for r in done.series] == [(1, 2)] * 3
            assert candles.by_time == by_time

    async def test_count_only_until_a_time_read_proves_the_range_ours(
        self, make_settings: Any
    ) -> None:
        """Steady cycles over symbols alone in their collection read by time without
        counting first. Once other symbols crowd the range, one cycle still reads by
        time (and sees it), the next counts and reads each symbol on its own, and the
        reports never change."""
        async with shared_klines(make_settings, {20, 21}) as (db, end, candles, cycle):

            async def counted() -> tuple[int, int]:
                done = await cycle()
                assert [(r.gap_count, r.missing_candles) for r in done.series] == [(1, 2)] * 3
                return candles.counts, candles.by_time

            assert await counted() == (1, 1)
            assert await counted() == (1, 2)
            await insert_others(db, end, SLOTS)
            assert await counted() == (1, 3)
            assert await counted() == (2, 3)
            assert await counted() == (3, 3)

    async def test_slices_switch_to_per_symbol_reads_where_others_crowd_in(
        self, make_settings: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A window read by time in slices (50 slots each here): the first slice is
        counted, the next two are read without counting; the third holds 80 other
        symbols' candles, so the fourth is counted, found crowded, and the rest of
        each tail is read per symbol. Every report is still the full scan's."""
        monkeypatch.setattr(candle_store, "_SLICE_DOCS", 150)
        async with shared_klines(make_settings, {20, 21, 170}) as (db, end, candles, cycle):
            await insert_others(db, end, 60)
            done = await cycle()
            assert [(r.gap_count, r.missing_candles) for r in done.series] == [(2, 3)] * 3
            assert [r.present_candles for r in done.series] == [SLOTS - 3] * 3
            assert (candles.counts, candles.by_time) == (2, 3)

    async def test_one_query_per_collection(self, make_settings: Any) -> None:
        """Six symbols in klines_1m: one read_many per default-window cycle, no per-series read."""
        symbols = [f"S{i}USDT" for i in range(6)]
        async with shared_klines(
            make_settings, {20}, symbols, CountingCandles, time_index=False
        ) as (_, _, candles, cycle):
            for expected in (1, 2):
                done = await cycle()
                assert [r.gap_count for r in done.series] == [1] * len(symbols)
                assert (candles.many, candles.single) == (expected, 0)


def counted(report: pb.SeriesReport) -> tuple[Any, ...]:
    """What a removal or restore changes: the counts and the figures built on them."""
    health = report.health
    return (
        *comparable(report),
        report.surplus_documents,
        health.duplicate_groups,
        health.consistency,
        health.quality,
    )


async def full_counts(replica: Any, cycle: pb.AuditCycle) -> list[tuple[Any, ...]]:
    first = cycle.series[0]
    again = await audit(replica, start_time=first.window_start, end_time=first.window_end)
    return [counted(r) for r in again.series]


async def settled_since_full(db: Any) -> int:
    series = await asyncio.wait_for(db[SERIES].find_one({"_id": "BTCUSDT|1m"}), TIMEOUT)
    assert series is not None and "settled" in series
    return int(series["settled"]["since_full"])


class TestRewrites:
    """A removal or restore of duplicates, or a new collection, is never hidden by a record."""

    async def test_cycle_after_removal_and_restore_equals_full_scan(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """Duplicates two hours back (before AUDIT_RECHECK): after their removal, and
        again after their restore, the next default-window cycle counts what a full
        scan counts."""
        settings = make_settings(AUDIT_SYMBOLS="BTCUSDT", ENABLE_DUPLICATE_REMOVAL="true", **ENV)
        replica = await start_replica(settings)
        db = replica.app.database.db
        end = window_end()
        await seed(db, "candles_BTCUSDT_1m", "BTCUSDT", end, set())
        copies = [
            {"symbol": "BTCUSDT", "timestamp": to_dt(end - (SLOTS + 10 - i) * M), "copy": True}
            for i in (20, 21, 22)
        ]
        await asyncio.wait_for(db["candles_BTCUSDT_1m"].insert_many(copies), TIMEOUT)
        await audit(replica)
        before = await audit(replica)
        assert await settled_since_full(db) == 1  # the record is trusted: incremental
        assert before.series[0].duplicate_groups == 3
        reply = await replica.stub.ResolveDuplicates(
            pb.ResolveDuplicatesRequest(
                symbol="BTCUSDT",
                timeframe="1m",
                strategy=pb.STRATEGY_KEEP_OLDEST,
                request_id="rewrite",
            ),
            timeout=TIMEOUT,
        )
        assert reply.documents_removed == 3
        removed = await audit(replica)
        assert removed.series[0].duplicate_groups == 0
        assert [counted(r) for r in removed.series] == await full_counts(replica, removed)
        assert await audit(replica)  # incremental again on the new record
        assert await settled_since_full(db) == 1
        store = MongoDuplicateStore(replica.app.database, "test")
        assert await asyncio.wait_for(store.restore("rewrite"), TIMEOUT) == (3, 0)
        restored = await audit(replica)
        assert restored.series[0].duplicate_groups == 3
        assert [counted(r) for r in restored.series] == await full_counts(replica, restored)

    async def test_record_of_another_collection_is_ignored(
        self, make_settings: Any, start_replica: Any
    ) -> None:
        """After CANDLE_COLLECTION_TEMPLATE changes, the first cycle scans the new
        collection whole (its old gap is found) and replaces the record."""
        first = await start_replica(make_settings(AUDIT_SYMBOLS="BTCUSDT", **ENV))
        db = first.app.database.db
        end = window_end()
        await seed(db, "candles_BTCUSDT_1m", "BTCUSDT", end, set())
        await seed(db, "klines_1m", "BTCUSDT", end, {30, 31})
        assert (await audit(first)).series[0].gap_count == 0
        moved = await start_replica(
            make_settings(
                AUDIT_SYMBOLS="BTCUSDT", CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}", **ENV
            )
        )
        cycle = await audit(moved)
        assert cycle.series[0].gap_count == 1
        assert [counted(r) for r in cycle.series] == await full_counts(moved, cycle)
        series = await asyncio.wait_for(db[SERIES].find_one({"_id": "BTCUSDT|1m"}), TIMEOUT)
        assert series is not None
        assert (series["settled"]["collection"], series["settled"]["since_full"]) == (
            "klines_1m",
            0,
        )
