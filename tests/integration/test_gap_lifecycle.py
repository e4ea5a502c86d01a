"""Gaps that heal (issue 22): each state transition, the backoff and attempts, the
priority order under the cap, the fencing of every new write, and ListGaps'
unchanged default, against SecantusDB with the real Auditor and stores."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import pytest
from pymongo import monitoring

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.errors import Fenced
from auditsvc.domain.gap_lifecycle import GapState
from auditsvc.domain.records import GapQuery
from auditsvc.ops.clock import SystemClock
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import MongoBackfillStore, MongoStateStore, connect
from auditsvc.storage.mongo.database import BACKFILLS, GAPS, Database, ensure_indexes, to_dt
from auditsvc.usecases.auditing import Auditor
from auditsvc.usecases.healing import Healer
from tests.integration.standalone import standalone_auditor
from tests.support import eventually

TIMEOUT = 30.0
MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 400
BTC, ETH = "BTCUSDT", "ETHUSDT"


class MovableClock(SystemClock):
    """The system clock, moved forward by the test (BACKFILL_TIMEOUT without waiting)."""

    def advance(self, seconds: float) -> None:
        self._offset_ms += round(seconds * 1000)


class DeposedFence:
    """A fence whose term is over: every write is refused before it runs."""

    def __init__(self) -> None:
        self.refused = 0

    async def check(self, epoch: int) -> None:
        raise Fenced("a newer epoch has written")

    async def write_fenced(self, epoch: int, work: Callable[[Any], Any]) -> Any:
        self.refused += 1
        raise Fenced("a newer epoch has written")


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    await asyncio.wait_for(ensure_indexes(handle), TIMEOUT)
    yield handle
    await handle.close()


def settings_for(make_settings: Callable[..., Settings], **env: str) -> Settings:
    base = {
        "AUDIT_SYMBOLS": f"{BTC},{ETH}",
        "AUDIT_TIMEFRAMES": "1m",
        "ENABLE_AUTO_BACKFILL": "true",
        "MIN_AUTO_BACKFILL_GAP": "60",
        "MAX_AUTO_BACKFILL_JOBS": "5",
        "BACKFILL_TIMEOUT": "60",
    }
    return make_settings(**{**base, **env})


async def seed(database: Database, symbol: str, missing: Iterable[range]) -> None:
    """Candles in every slot of the window except the ``missing`` slot ranges."""
    holes = {i for r in missing for i in r}
    docs = [
        {"symbol": symbol, "timestamp": to_dt(T0 + i * MIN)} for i in range(SLOTS) if i not in holes
    ]
    await asyncio.wait_for(database.db[f"candles_{symbol}_1m"].insert_many(docs), TIMEOUT)


async def fill(database: Database, symbol: str, slots: range) -> None:
    """What a data writer does: the missing candles arrive."""
    docs = [{"symbol": symbol, "timestamp": to_dt(T0 + i * MIN)} for i in slots]
    await asyncio.wait_for(database.db[f"candles_{symbol}_1m"].insert_many(docs), TIMEOUT)


async def cycle(audits: Auditor, symbols: list[str] | None = None) -> Any:
    selection = audits.select(symbols or [BTC], ["1m"], T0, T0 + SLOTS * MIN)
    return await asyncio.wait_for(audits.run_cycle(selection, trigger="rpc"), TIMEOUT)


async def gap_doc(database: Database, symbol: str) -> dict[str, Any]:
    docs = await asyncio.wait_for(database.db[GAPS].find({"symbol": symbol}).to_list(None), TIMEOUT)
    assert len(docs) == 1, docs
    return dict(docs[0])


async def requests(database: Database) -> list[dict[str, Any]]:
    return list(
        await asyncio.wait_for(
            database.db[BACKFILLS].find({}).sort("created_at", 1).to_list(None), TIMEOUT
        )
    )


class TestFilled:
    """A gap whose slots arrive is FILLED and its request closed by the service."""

    async def test_open_requested_filled(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """OPEN -> BACKFILL_REQUESTED at the cycle; the fill makes it FILLED, request closed."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 104)])
        audits = standalone_auditor(settings, database, incremental=False)
        first = await cycle(audits)
        assert first.series[0].backfills_requested == 1
        doc = await gap_doc(database, BTC)
        assert (doc["state"], doc["attempts"]) == ("backfill_requested", 1)
        (req,) = await requests(database)
        assert (req["open"], req["status"], req["missing_candles"]) == (True, "pending", 4)
        assert doc["backfill_request_id"] == req["request_id"]

        await fill(database, BTC, range(100, 104))  # the writer fills, never closes
        await cycle(audits)
        doc = await gap_doc(database, BTC)
        assert doc["state"] == "filled" and doc["filled_at"] is not None
        assert doc["expires_at"] > doc["filled_at"]  # kept GAP_HISTORY_RETENTION
        (req,) = await requests(database)
        assert (req["open"], req["status"]) == (False, "filled")
        registry = audits._metrics.registry
        fills = registry.get_sample_value(
            "data_manager_audit_gap_fill_seconds_count", {"timeframe": "1m"}
        )
        assert fills == 1  # observed once, by the filling cycle's healing pass
        await cycle(audits)
        assert (
            registry.get_sample_value(
                "data_manager_audit_gap_fill_seconds_count", {"timeframe": "1m"}
            )
            == 1
        )
        assert (
            registry.get_sample_value("data_manager_audit_backfills_live", {"timeframe": "1m"}) == 0
        )

    async def test_partly_filled_keeps_identity(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A fill of a gap's front leaves the rest under the same record, request and attempts."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 106)])
        audits = standalone_auditor(settings, database, incremental=False)
        await cycle(audits)
        before = await gap_doc(database, BTC)
        await fill(database, BTC, range(100, 103))
        await cycle(audits)
        after = await gap_doc(database, BTC)
        assert after["_id"] == before["_id"]
        assert after["start_time"] == to_dt(T0 + 103 * MIN)
        assert after["missing_candles"] == 3
        assert (after["state"], after["attempts"]) == ("backfill_requested", 1)
        assert after["backfill_request_id"] == before["backfill_request_id"]
        assert after["detected_at"] == before["detected_at"]
        (req,) = await requests(database)
        # Shrunk: the request is live, its timeout restarted from the smaller size.
        assert (req["open"], req["missing_candles"]) == (True, 3)

    async def test_identity_of_many_series_in_a_bounded_number_of_reads(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """70 series, each with two gaps whose fronts are filled: every gap keeps its
        record, and finding them costs one read per stored batch (its ``_id`` read
        aside), not one per series or per gap."""
        symbols = [f"S{i:02d}USDT" for i in range(70)]
        settings = settings_for(
            make_settings, AUDIT_SYMBOLS=",".join(symbols), ENABLE_AUTO_BACKFILL="false"
        )
        for symbol in symbols:
            await seed(database, symbol, [range(100, 106), range(200, 206)])
        reads = GapReads()
        monitoring.register(reads)  # applies to clients made from now on
        watched = connect(settings.mongo.uri, settings.mongo.database, 2000)
        try:
            audits = standalone_auditor(settings, watched, incremental=False)
            await cycle(audits, symbols)
            before = await all_gaps(database)
            for symbol in symbols:
                await fill(database, symbol, range(100, 103))
                await fill(database, symbol, range(200, 202))
            reads.on = True
            await cycle(audits, symbols)
            reads.on = False
        finally:
            await watched.close()
        shifted = {to_dt(T0 + 100 * MIN): to_dt(T0 + 103 * MIN)}
        shifted[to_dt(T0 + 200 * MIN)] = to_dt(T0 + 202 * MIN)
        after = await all_gaps(database)
        assert {(d["symbol"], d["start_time"]): d["_id"] for d in after} == {
            (d["symbol"], shifted[d["start_time"]]): d["_id"] for d in before
        }
        assert sorted({(d["start_time"], d["missing_candles"]) for d in after}) == [
            (to_dt(T0 + 103 * MIN), 3),
            (to_dt(T0 + 202 * MIN), 4),
        ]
        batches = reads.shapes["_id"]
        identity = sum(n for shape, n in reads.shapes.items() if "start_time" in shape)
        identity += reads.shapes["symbol,timeframe"]
        assert batches > 0 and identity <= batches, reads.shapes


class GapReads(monitoring.CommandListener):
    """Counts find commands on audit_gaps while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.finds = 0
        self.shapes: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name == "find" and event.command.get("find") == GAPS:
            self.finds += 1
            self.shapes[",".join(sorted(event.command.get("filter", {})))] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def all_gaps(database: Database) -> list[dict[str, Any]]:
    return list(await asyncio.wait_for(database.db[GAPS].find({}).to_list(None), TIMEOUT))


class TestExpiry:
    """Requests that do not shrink their gap expire, back off, and end UNFILLABLE."""

    async def test_expire_backoff_unfillable(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Two expired requests (60 s timeout, one 60 s backoff between) make the gap UNFILLABLE."""
        settings = settings_for(make_settings, BACKFILL_MAX_ATTEMPTS="2")
        await seed(database, BTC, [range(100, 104)])
        clock = MovableClock()
        audits = standalone_auditor(settings, database, incremental=False, clock=clock)
        await cycle(audits)  # request 1
        clock.advance(61)
        await cycle(audits)  # request 1 expires; the gap backs off 60 s
        doc = await gap_doc(database, BTC)
        assert (doc["state"], doc["attempts"]) == ("open", 1)
        (req,) = await requests(database)
        assert (req["open"], req["status"]) == (False, "expired")
        clock.advance(30)
        await cycle(audits)  # inside the backoff: no request
        assert len(await requests(database)) == 1
        clock.advance(31)
        await cycle(audits)  # backoff over: request 2
        doc = await gap_doc(database, BTC)
        assert (doc["state"], doc["attempts"]) == ("backfill_requested", 2)
        clock.advance(61)
        await cycle(audits)  # request 2 expires: attempts used up
        doc = await gap_doc(database, BTC)
        assert doc["state"] == "unfillable" and "expires_at" in doc
        clock.advance(24 * 3600)
        await cycle(audits)  # still missing, still UNFILLABLE: no more requests
        assert (await gap_doc(database, BTC))["state"] == "unfillable"
        reqs = await requests(database)
        assert [(r["open"], r["status"]) for r in reqs] == [(False, "expired")] * 2
        registry = audits._metrics.registry
        labels = {"timeframe": "1m"}
        assert registry.get_sample_value("data_manager_audit_backfills_expired_total", labels) == 2
        assert registry.get_sample_value("data_manager_audit_gaps_unfillable_total", labels) == 1

    async def test_writer_closed_without_filling(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A writer that closes a request but fills nothing costs an attempt and a backoff."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 104)])
        clock = MovableClock()
        audits = standalone_auditor(settings, database, incremental=False, clock=clock)
        await cycle(audits)
        await database.db[BACKFILLS].update_many({}, {"$set": {"open": False, "status": "failed"}})
        await cycle(audits)
        doc = await gap_doc(database, BTC)
        assert (doc["state"], doc["attempts"]) == ("open", 1)
        assert len(await requests(database)) == 1  # backing off
        clock.advance(61)
        await cycle(audits)
        assert (await gap_doc(database, BTC))["state"] == "backfill_requested"
        assert len(await requests(database)) == 2

    async def test_expired_requests_free_the_cap(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """With a cap of one, an expired request no longer blocks the next gap."""
        settings = settings_for(make_settings, MAX_AUTO_BACKFILL_JOBS="1")
        await seed(database, BTC, [range(100, 110)])
        await seed(database, ETH, [range(200, 202)])
        clock = MovableClock()
        audits = standalone_auditor(settings, database, incremental=False, clock=clock)
        await cycle(audits, [BTC, ETH])
        assert [r["symbol"] for r in await requests(database)] == [BTC]
        clock.advance(61)
        await cycle(audits, [BTC, ETH])  # BTC's expires and backs off: ETH's turn
        reqs = await requests(database)
        assert [(r["symbol"], r["open"]) for r in reqs] == [(BTC, False), (ETH, True)]
        assert await database.db[BACKFILLS].count_documents({"open": True}) == 1


class TestPriority:
    """Under the cap, requests go by severity, then length, then recency, across the cycle."""

    async def test_worst_first_across_series(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """ETH, scanned last, holds the HIGH gap; BTC's longer MEDIUM gap beats its short ones."""
        settings = settings_for(make_settings, MAX_AUTO_BACKFILL_JOBS="3")
        # BTC: 3-, 5- and 3-candle MEDIUM gaps; ETH: one 70-candle HIGH gap (> 1 h).
        await seed(database, BTC, [range(10, 13), range(50, 55), range(300, 303)])
        await seed(database, ETH, [range(100, 170)])
        audits = standalone_auditor(settings, database, incremental=False)
        done = await cycle(audits, [BTC, ETH])
        reqs = await requests(database)
        chosen = [(r["symbol"], r["start_time"]) for r in reqs]
        assert sorted(chosen) == sorted(
            [
                (ETH, to_dt(T0 + 100 * MIN)),  # HIGH
                (BTC, to_dt(T0 + 50 * MIN)),  # longest MEDIUM
                (BTC, to_dt(T0 + 300 * MIN)),  # equal length: the newer
            ]
        )
        by_symbol = {r.symbol: r for r in done.series}
        assert (by_symbol[BTC].backfills_requested, by_symbol[BTC].backfills_skipped) == (2, 1)
        assert by_symbol[ETH].backfills_requested == 1
        skipped = await database.db[GAPS].find_one({"start_time": to_dt(T0 + 10 * MIN)})
        assert skipped is not None and skipped["state"] == "open"


class TestFencing:
    """Every write of the healing pass goes through the fence."""

    async def test_deposed_leader_writes_nothing(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A fence that refuses stops each kind of write; the stored state is unchanged."""
        settings = settings_for(make_settings, MAX_AUTO_BACKFILL_JOBS="2")
        await seed(database, BTC, [range(100, 104), range(200, 204)])
        clock = MovableClock()
        audits = standalone_auditor(settings, database, incremental=False, clock=clock)
        first = await cycle(audits)
        await fill(database, BTC, range(100, 104))
        await cycle(audits)  # one gap FILLED (request closed), the other still requested
        await database.db[BACKFILLS].update_many({}, {"$set": {"open": True}})
        await database.db[GAPS].update_many({}, {"$set": {"cycle_id": first.cycle_id}})
        clock.advance(3600)
        gaps_before = await database.db[GAPS].find({}).sort("_id", 1).to_list(None)
        reqs_before = await requests(database)
        fence = DeposedFence()
        healer = Healer(settings.backfill, clock, MongoBackfillStore(database), fence, Metrics())
        with pytest.raises(Fenced):
            await asyncio.wait_for(healer.heal(first.cycle_id, 7), TIMEOUT)
        assert fence.refused == 1
        assert await database.db[GAPS].find({}).sort("_id", 1).to_list(None) == gaps_before
        assert await requests(database) == reqs_before


class TestListGapsDefault:
    """ListGaps without states answers as before states existed."""

    async def test_default_and_states(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """No states: OPEN and BACKFILL_REQUESTED only; states select FILLED and the rest."""
        settings = settings_for(make_settings, MAX_AUTO_BACKFILL_JOBS="1")
        await seed(database, BTC, [range(10, 12), range(100, 104), range(200, 204)])
        audits = standalone_auditor(settings, database, incremental=False)
        await cycle(audits)
        await fill(database, BTC, range(10, 12))
        await cycle(audits)
        state = MongoStateStore(database)
        listed = await state.list_gaps(GapQuery())
        assert sorted(g.state.value for g in listed) == ["backfill_requested", "open"]
        filled = await state.list_gaps(GapQuery(states=(GapState.FILLED,)))
        assert [(g.start_ms, g.filled_ms is not None) for g in filled] == [(T0 + 10 * MIN, True)]
        # A gap stored before states existed (no state field) is still listed by default.
        await database.db[GAPS].update_many({}, {"$unset": {"state": ""}})
        assert len(await state.list_gaps(GapQuery())) == 3

    async def test_wire_states(
        self,
        make_settings: Callable[..., Settings],
        start_replica: Callable[..., Any],
        database: Database,
    ) -> None:
        """Over gRPC a FILLED gap carries its state, filled_at and attempts; GetStatus counts it."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 104)])
        replica = await start_replica(settings)
        audit = pb.RunAuditRequest(symbols=[BTC], timeframes=["1m"])
        audit.start_time.FromMilliseconds(T0)
        audit.end_time.FromMilliseconds(T0 + SLOTS * MIN)
        await replica.stub.RunAudit(audit, timeout=TIMEOUT)
        await fill(database, BTC, range(100, 104))
        await replica.stub.RunAudit(audit, timeout=TIMEOUT)
        default = await replica.stub.ListGaps(pb.ListGapsRequest(), timeout=TIMEOUT)
        assert list(default.gaps) == []
        reply = await replica.stub.ListGaps(
            pb.ListGapsRequest(states=[pb.GAP_STATE_FILLED]), timeout=TIMEOUT
        )
        (gap,) = reply.gaps
        assert (gap.state, gap.attempts) == (pb.GAP_STATE_FILLED, 1)
        assert gap.HasField("filled_at") and gap.filled_at.ToMilliseconds() > 0

        async def counted() -> bool:
            status = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
            by_state = {c.state: c.count for c in status.summary.gap_states}
            return by_state == {pb.GAP_STATE_FILLED: 1}

        await eventually(counted, within=TIMEOUT)  # the summary refreshes every second
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.ListGaps(pb.ListGapsRequest(states=[42]), timeout=TIMEOUT)  # type: ignore[list-item]
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("states: ")


class TestSweepPath:
    """Default-window cycles (the sweep, with settled records) heal the same way."""

    async def test_default_window_fill(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A gap in the default window is requested, then FILLED when its candles arrive."""
        settings = settings_for(make_settings, AUDIT_LOOKBACK="3600", AUDIT_FULL_SCAN_EVERY="1")
        audits = standalone_auditor(settings, database, incremental=True)
        (target,) = audits.select([BTC], ["1m"], None, None)
        start, end = target.window.start_ms, target.window.end_ms
        hole = range(start + 10 * MIN, start + 14 * MIN, MIN)
        docs = [
            {"symbol": BTC, "timestamp": to_dt(t)} for t in range(start, end, MIN) if t not in hole
        ]
        await asyncio.wait_for(database.db[f"candles_{BTC}_1m"].insert_many(docs), TIMEOUT)

        async def default_cycle() -> Any:
            selection = audits.select([BTC], ["1m"], None, None)
            return await asyncio.wait_for(
                audits.run_cycle(selection, trigger="rpc", default_window=True), TIMEOUT
            )

        await default_cycle()
        doc = await gap_doc(database, BTC)
        assert (doc["state"], doc["start_time"]) == ("backfill_requested", to_dt(hole[0]))
        fills = [{"symbol": BTC, "timestamp": to_dt(t)} for t in hole]
        await asyncio.wait_for(database.db[f"candles_{BTC}_1m"].insert_many(fills), TIMEOUT)
        await default_cycle()
        doc = await gap_doc(database, BTC)
        assert doc["state"] == "filled" and doc["filled_at"] is not None
        (req,) = await requests(database)
        assert (req["open"], req["status"]) == (False, "filled")


class TestLiveFill:
    """With the live tail on, a requested gap found whole is FILLED without a cycle."""

    async def test_filled_within_a_poll(
        self,
        make_settings: Callable[..., Settings],
        start_replica: Callable[..., Any],
        database: Database,
    ) -> None:
        """The writer fills a requested gap; FILLED and the request closed within seconds."""
        settings = settings_for(
            make_settings, AUDIT_SYMBOLS=BTC, AUDIT_LOOKBACK="3600", LIVE_MODE="poll"
        )
        replica = await start_replica(settings)
        (target,) = replica.app.auditor.select([BTC], ["1m"], None, None)
        start, end = target.window.start_ms, target.window.end_ms
        hole = range(start + 10 * MIN, start + 14 * MIN, MIN)
        docs = [
            {"symbol": BTC, "timestamp": to_dt(t)} for t in range(start, end, MIN) if t not in hole
        ]
        await asyncio.wait_for(database.db[f"candles_{BTC}_1m"].insert_many(docs), TIMEOUT)
        await replica.stub.RunAudit(
            pb.RunAuditRequest(symbols=[BTC], timeframes=["1m"]), timeout=TIMEOUT
        )
        doc = await gap_doc(database, BTC)
        assert doc["state"] == "backfill_requested"
        fills = [{"symbol": BTC, "timestamp": to_dt(t)} for t in hole]
        await asyncio.wait_for(database.db[f"candles_{BTC}_1m"].insert_many(fills), TIMEOUT)

        async def healed() -> bool:
            got = await database.db[GAPS].find_one({"_id": doc["_id"]})
            req = await database.db[BACKFILLS].find_one({"request_id": doc["backfill_request_id"]})
            return bool(got and got["state"] == "filled" and req and req["status"] == "filled")

        await eventually(healed, within=10)
