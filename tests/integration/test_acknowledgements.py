"""Acknowledged outages (issue 22 item 4): past, future, overlapping and deleted
windows, validation, idempotency, fencing, and the token and leader rules of the
mutating calls, against SecantusDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.errors import Fenced
from auditsvc.leadership.term import Standalone
from auditsvc.ops.clock import SystemClock
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import MongoLeadershipStore, MongoStateStore, connect
from auditsvc.storage.mongo.ack_store import MongoAckStore
from auditsvc.storage.mongo.database import ACKS, BACKFILLS, GAPS, Database, ensure_indexes, to_dt
from auditsvc.usecases.acknowledgements import Acknowledgements
from auditsvc.usecases.auditing import Auditor
from auditsvc.usecases.page_tokens import PageTokens
from auditsvc.usecases.request_ledger import RequestLedger
from tests.integration.standalone import standalone_auditor
from tests.integration.test_gap_lifecycle import DeposedFence

TIMEOUT = 30.0
MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 400
BTC, ETH = "BTCUSDT", "ETHUSDT"
TOKEN = "ack-test-token"


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
    }
    return make_settings(**{**base, **env})


async def seed(database: Database, symbol: str, missing: Iterable[range]) -> None:
    holes = {i for r in missing for i in r}
    docs = [
        {"symbol": symbol, "timestamp": to_dt(T0 + i * MIN)} for i in range(SLOTS) if i not in holes
    ]
    await asyncio.wait_for(database.db[f"candles_{symbol}_1m"].insert_many(docs), TIMEOUT)


def auditor(settings: Settings, database: Database) -> Auditor:
    return standalone_auditor(settings, database, incremental=False, acks=MongoAckStore(database))


def acknowledgements(settings: Settings, database: Database, audits: Auditor) -> Acknowledgements:
    """The use case over the real stores, leading alone (epoch 0) like the auditor."""
    fence = MongoLeadershipStore(database, settings.election.name, settings.server.replica_id)
    leadership = Standalone(settings.server.replica_id, "127.0.0.1:0", SystemClock().now_ms())
    ledger = RequestLedger(MongoStateStore(database), fence, leadership)

    async def secret() -> str:
        return "s" * 32

    return Acknowledgements(
        settings.audit,
        SystemClock(),
        MongoAckStore(database),
        fence,
        leadership,
        ledger,
        PageTokens(secret),
    )


async def cycle(audits: Auditor, symbols: list[str]) -> Any:
    selection = audits.select(symbols, ["1m"], T0, T0 + SLOTS * MIN)
    return await asyncio.wait_for(audits.run_cycle(selection, trigger="rpc"), TIMEOUT)


async def states(database: Database, symbol: str) -> dict[int, str]:
    docs = await asyncio.wait_for(database.db[GAPS].find({"symbol": symbol}).to_list(None), TIMEOUT)
    return {(d["start_time"].timestamp() * 1000 - T0) // MIN: d["state"] for d in docs}


class TestAcknowledgedGaps:
    """A gap inside an acknowledged window is ACKNOWLEDGED, unrequested and uncounted."""

    async def test_past_window(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A past outage: its gap is ACKNOWLEDGED, not backfilled, counted apart in the report."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 104), range(300, 302)])
        audits = auditor(settings, database)
        acks = acknowledgements(settings, database, audits)
        await acks.acknowledge(
            [BTC], ["1m"], T0 + 90 * MIN, T0 + 110 * MIN, "exchange maintenance", ""
        )
        done = await cycle(audits, [BTC])
        (report,) = done.series
        assert (report.gap_count, report.missing_candles) == (1, 2)
        assert (report.acknowledged_gap_count, report.acknowledged_missing_candles) == (1, 4)
        assert report.expected_candles == SLOTS - 4
        assert report.health.score.completeness == pytest.approx(100 * (SLOTS - 6) / (SLOTS - 4))
        assert report.health.score.consistency == 90.0  # one counted gap, not two
        assert await states(database, BTC) == {100: "acknowledged", 300: "backfill_requested"}
        reqs = await database.db[BACKFILLS].find({}).to_list(None)
        assert [r["start_time"] for r in reqs] == [to_dt(T0 + 300 * MIN)]

    async def test_future_window(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A planned window reaching into the future is accepted, listed, and covers its part."""
        settings = settings_for(make_settings)
        await seed(database, ETH, [range(380, 400)])
        audits = auditor(settings, database)
        acks = acknowledgements(settings, database, audits)
        far = T0 + 10 * 365 * 86_400_000
        made = await acks.acknowledge([], [], T0 + 370 * MIN, far, "planned upgrade", "")
        assert (made.symbols, made.timeframes, made.end_ms) == ((), (), far)
        listed, token = await acks.page(0, "")
        assert [a.ack_id for a in listed] == [made.ack_id] and token == ""
        await cycle(audits, [ETH])
        assert await states(database, ETH) == {380: "acknowledged"}

    async def test_overlapping_windows(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Two overlapping windows cover together a gap neither covers alone."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 120)])
        audits = auditor(settings, database)
        acks = acknowledgements(settings, database, audits)
        await acks.acknowledge([BTC], [], T0 + 95 * MIN, T0 + 110 * MIN, "first half", "")
        await acks.acknowledge([], ["1m"], T0 + 108 * MIN, T0 + 125 * MIN, "second half", "")
        (report,) = (await cycle(audits, [BTC])).series
        assert (report.gap_count, report.acknowledged_gap_count) == (0, 1)
        assert await states(database, BTC) == {100: "acknowledged"}

    async def test_deleted_window(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """Deleting the acknowledgement makes its gap OPEN, counted and requested again."""
        settings = settings_for(make_settings)
        await seed(database, BTC, [range(100, 104)])
        audits = auditor(settings, database)
        acks = acknowledgements(settings, database, audits)
        made = await acks.acknowledge([BTC], [], T0, T0 + SLOTS * MIN, "known", "")
        await cycle(audits, [BTC])
        assert await states(database, BTC) == {100: "acknowledged"}
        assert await database.db[BACKFILLS].count_documents({}) == 0
        gone = await acks.delete(made.ack_id)
        assert gone.ack_id == made.ack_id
        assert await database.db[ACKS].count_documents({}) == 0
        (report,) = (await cycle(audits, [BTC])).series
        assert (report.gap_count, report.acknowledged_gap_count) == (1, 0)
        assert await states(database, BTC) == {100: "backfill_requested"}


class TestRules:
    """Validation, idempotency and fencing of the acknowledgement writes."""

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"reason": ""}, "reason"),
            ({"reason": "   "}, "reason"),
            ({"reason": "x" * 501}, "reason"),
            ({"start_ms": None}, "start_time"),
            ({"end_ms": None}, "end_time"),
            ({"start_ms": T0 + MIN, "end_ms": T0}, "start_time"),
            ({"symbols": ["NOPE"]}, "symbols"),
            ({"timeframes": ["7m"]}, "timeframes"),
        ],
    )
    async def test_bad_field_named(
        self,
        make_settings: Callable[..., Settings],
        database: Database,
        kwargs: dict[str, Any],
        field: str,
    ) -> None:
        """Each bad field is refused naming it, and nothing is stored."""
        settings = settings_for(make_settings)
        acks = acknowledgements(settings, database, auditor(settings, database))
        args: dict[str, Any] = {
            "symbols": [],
            "timeframes": [],
            "start_ms": T0,
            "end_ms": T0 + MIN,
            "reason": "ok",
            "request_id": "",
        }
        with pytest.raises(Exception) as err:
            await acks.acknowledge(**{**args, **kwargs})
        assert getattr(err.value, "field", None) == field
        assert await database.db[ACKS].count_documents({}) == 0

    async def test_request_id_is_idempotent(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A repeated request_id returns the first acknowledgement and stores one."""
        settings = settings_for(make_settings)
        acks = acknowledgements(settings, database, auditor(settings, database))
        first = await acks.acknowledge([BTC], [], T0, T0 + MIN, "known", "ack-1")
        again = await acks.acknowledge([BTC], [], T0, T0 + MIN, "known", "ack-1")
        assert again == first
        assert await database.db[ACKS].count_documents({}) == 1
        with pytest.raises(Exception) as err:
            await acks.acknowledge([ETH], [], T0, T0 + MIN, "known", "ack-1")
        assert getattr(err.value, "reason", None) == "REQUEST_ID_REUSED"

    async def test_writes_are_fenced(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A deposed leader's acknowledgement and deletion are refused and change nothing."""
        settings = settings_for(make_settings)
        audits = auditor(settings, database)
        acks = acknowledgements(settings, database, audits)
        kept = await acks.acknowledge([BTC], [], T0, T0 + MIN, "known", "")
        fence = DeposedFence()
        acks._fence = fence
        with pytest.raises(Fenced):
            await acks.acknowledge([BTC], [], T0, T0 + MIN, "late", "")
        with pytest.raises(Fenced):
            await acks.delete(kept.ack_id)
        assert fence.refused == 2
        assert [d["_id"] for d in await database.db[ACKS].find({}).to_list(None)] == [kept.ack_id]


class TestWire:
    """Over gRPC: the mutating calls need the token, the read does not."""

    async def test_token_and_round_trip(
        self,
        make_settings: Callable[..., Settings],
        start_replica: Callable[..., Any],
    ) -> None:
        """Without the token AcknowledgeGaps is UNAUTHENTICATED; with it, ack, list, delete."""
        replica = await start_replica(settings_for(make_settings, AUDIT_API_TOKEN=TOKEN))
        request = pb.AcknowledgeGapsRequest(symbols=[BTC], reason="maintenance")
        request.start_time.FromMilliseconds(T0)
        request.end_time.FromMilliseconds(T0 + 3_600_000)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.AcknowledgeGaps(request, timeout=TIMEOUT)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", f"Bearer {TOKEN}"),)
        made = await replica.stub.AcknowledgeGaps(request, metadata=auth, timeout=TIMEOUT)
        listed = await replica.stub.ListAcknowledgements(
            pb.ListAcknowledgementsRequest(), timeout=TIMEOUT
        )
        assert [a.id for a in listed.acknowledgements] == [made.acknowledgement.id]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.DeleteAcknowledgement(
                pb.DeleteAcknowledgementRequest(id=made.acknowledgement.id), timeout=TIMEOUT
            )
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        gone = await replica.stub.DeleteAcknowledgement(
            pb.DeleteAcknowledgementRequest(id=made.acknowledgement.id),
            metadata=auth,
            timeout=TIMEOUT,
        )
        assert gone.acknowledgement.reason == "maintenance"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.DeleteAcknowledgement(
                pb.DeleteAcknowledgementRequest(id=made.acknowledgement.id),
                metadata=auth,
                timeout=TIMEOUT,
            )
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert err.value.details().startswith("id: ")
        bad = pb.AcknowledgeGapsRequest(reason="x" * 501)
        bad.start_time.FromMilliseconds(T0)
        bad.end_time.FromMilliseconds(T0 + MIN)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.AcknowledgeGaps(bad, metadata=auth, timeout=TIMEOUT)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("reason: ")
