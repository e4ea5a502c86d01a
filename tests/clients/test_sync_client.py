"""BlockingAuditClient against the fake server (run in a worker thread)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from auditclient import BlockingAuditClient, ClientOptions, NoLeader, Unavailable

from .fakes import FakeAuditService, gap

UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "restarting", ())


class TestBlockingClient:
    """The blocking client mirrors the async one."""

    async def test_every_method_round_trips(
        self, options: ClientOptions, service: FakeAuditService
    ) -> None:
        """All blocking methods return proto responses; list_gaps follows tokens."""
        service.gap_pages = [[gap("A", 0)], [gap("A", 1)], [gap("A", 2)]]

        def work() -> tuple[object, ...]:
            with BlockingAuditClient(options=options) as client:
                return (
                    client.get_leader().leader_id,
                    client.get_status().replica_id,
                    client.run_audit(["BTCUSDT"]).cycle.cycle_id,
                    [g.start_time.seconds for g in client.list_gaps("A", page_size=1)],
                    client.resolve_duplicates("BTCUSDT", "1m").dry_run,
                )

        async with asyncio.timeout(20):
            result = await asyncio.to_thread(work)
        assert result == (
            "replica-a",
            "replica-a",
            "cycle-1",
            [1_704_067_200, 1_704_067_260, 1_704_067_320],
            True,
        )
        assert uuid.UUID(service.requests["RunAudit"][0].request_id).version == 4
        assert service.calls["ListGaps"] == 3

    async def test_retry_rules_and_typed_errors(
        self, options: ClientOptions, service: FakeAuditService
    ) -> None:
        """Reads are retried, mutations only with request_id; errors are typed."""
        service.failures["GetStatus"] = [UNAVAILABLE, UNAVAILABLE]
        service.failures["RunAudit"] = [UNAVAILABLE, UNAVAILABLE]
        service.always["ResolveDuplicates"] = (
            grpc.StatusCode.UNAVAILABLE,
            "no leader is known",
            (("x-audit-leader", "h:1"),),
        )

        def work() -> None:
            with BlockingAuditClient(options=options) as client:
                client.get_status()
                with pytest.raises(Unavailable):
                    client.run_audit()
                client.run_audit(request_id="k")
                with pytest.raises(NoLeader) as caught:
                    client.resolve_duplicates("BTCUSDT", "1m")
                assert caught.value.leader_address == "h:1"

        async with asyncio.timeout(20):
            await asyncio.to_thread(work)
        assert service.calls["GetStatus"] == 3
        assert service.calls["RunAudit"] == 3
        assert service.calls["ResolveDuplicates"] == 1
