"""Every AuditClient method against the fake server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from auditclient import AuditClient, ClientOptions, DeadlineExceeded
from auditpb.v1 import audit_pb2

from .fakes import FakeAuditService, FakeServer, gap, ts


class TestRoundTrip:
    """Each unary method sends the right request and returns the proto response."""

    async def test_get_leader(self, client: AuditClient, service: FakeAuditService) -> None:
        """get_leader returns the GetLeaderResponse."""
        reply = await client.get_leader()
        assert isinstance(reply, audit_pb2.GetLeaderResponse)
        assert (reply.leader_id, reply.epoch, reply.is_self) == ("replica-a", 7, True)
        assert service.calls["GetLeader"] == 1

    async def test_get_status(self, client: AuditClient) -> None:
        """get_status returns the GetStatusResponse with its last cycle."""
        reply = await client.get_status()
        assert reply.role == audit_pb2.ROLE_LEADER
        assert reply.last_cycle.series[0].health.quality == pytest.approx(96.5)

    async def test_run_audit_sends_filters_and_window(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """run_audit sends symbols, timeframes and the window as UTC timestamps."""
        start = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
        reply = await client.run_audit(["BTCUSDT", "ETHUSDT"], ["1m"], start=start)
        assert reply.cycle.cycle_id == "cycle-1"
        sent = service.requests["RunAudit"][0]
        assert list(sent.symbols) == ["BTCUSDT", "ETHUSDT"]
        assert list(sent.timeframes) == ["1m"]
        assert sent.start_time.ToDatetime(tzinfo=UTC) == datetime(2024, 1, 1, tzinfo=UTC)
        assert not sent.HasField("end_time")

    async def test_run_audit_generates_uuid4_request_id(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """Without request_id each mutating call carries a fresh uuid4."""
        await client.run_audit()
        await client.run_audit()
        ids = [r.request_id for r in service.requests["RunAudit"]]
        assert all(uuid.UUID(i).version == 4 for i in ids)
        assert ids[0] != ids[1]

    async def test_resolve_duplicates_defaults_to_dry_run(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """resolve_duplicates is a dry run unless dry_run=False, with a generated id."""
        reply = await client.resolve_duplicates("BTCUSDT", "1m", strategy="keep_oldest")
        sent = service.requests["ResolveDuplicates"][0]
        assert sent.dry_run is True
        assert sent.strategy == audit_pb2.STRATEGY_KEEP_OLDEST
        assert uuid.UUID(sent.request_id).version == 4
        assert reply.documents_removed == 0
        applied = await client.resolve_duplicates("BTCUSDT", "1m", dry_run=False, request_id="r1")
        assert applied.documents_removed == 1
        assert service.requests["ResolveDuplicates"][1].request_id == "r1"

    async def test_naive_datetime_is_rejected(self, client: AuditClient) -> None:
        """A naive datetime raises ValueError before anything is sent."""
        with pytest.raises(ValueError, match="timezone-aware"):
            await client.run_audit(start=datetime(2024, 1, 1))


class TestListGaps:
    """list_gaps follows page tokens with the same filters."""

    async def test_follows_tokens_across_three_pages(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """Gaps of three pages arrive in order, from three calls sharing the filters."""
        service.gap_pages = [[gap("A", 0), gap("A", 5)], [gap("A", 10)], [gap("B", 0)]]
        start = ts(1_704_000_000)
        async with asyncio.timeout(10):
            found = [
                g
                async for g in client.list_gaps(
                    "A", "1m", start=start, min_missing_candles=2, page_size=2
                )
            ]
        assert [(g.symbol, g.start_time.seconds) for g in found] == [
            ("A", 1_704_067_200),
            ("A", 1_704_067_500),
            ("A", 1_704_067_800),
            ("B", 1_704_067_200),
        ]
        sent = service.requests["ListGaps"]
        assert [r.page_token for r in sent] == ["", "page-1", "page-2"]
        assert {(r.symbol, r.timeframe, r.min_missing_candles, r.page_size) for r in sent} == {
            ("A", "1m", 2, 2)
        }
        assert all(r.start_time.seconds == 1_704_000_000 for r in sent)

    async def test_empty_result(self, client: AuditClient) -> None:
        """No gaps yields nothing after one call."""
        async with asyncio.timeout(10):
            assert [g async for g in client.list_gaps()] == []


class TestLifecycle:
    """Connecting, closing and deadlines."""

    async def test_connect_and_close(self, options: ClientOptions) -> None:
        """connect() and close() work without the context manager and are idempotent."""
        client = AuditClient(options=options)
        with pytest.raises(RuntimeError, match="not connected"):
            await client.get_leader()
        assert await client.connect() is client
        await client.connect()
        assert (await client.get_leader()).leader_id == "replica-a"
        await client.close()
        await client.close()

    async def test_target_and_timeout_override_options(self, options: ClientOptions) -> None:
        """Keyword arguments override the given options."""
        client = AuditClient("127.0.0.1:1", options=options, timeout=2.5, token="t")
        assert (client.options.target, client.options.timeout) == ("127.0.0.1:1", 2.5)
        assert client.options.token == "t"
        assert client.options.retry_initial_backoff == options.retry_initial_backoff

    async def test_every_call_has_a_deadline(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """A server slower than the deadline raises DeadlineExceeded in time."""
        service.delay = 2.0
        async with AuditClient(server.target, timeout=0.2) as client:
            async with asyncio.timeout(1.5):
                with pytest.raises(DeadlineExceeded):
                    await client.get_leader()
                with pytest.raises(DeadlineExceeded):
                    await client.run_audit(request_id="slow")
