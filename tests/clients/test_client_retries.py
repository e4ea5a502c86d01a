"""Which calls are retried: reads by the channel, mutations only with a request_id."""

from __future__ import annotations

import json

import grpc
import pytest

from auditclient import AuditClient, InvalidArgument, NoLeader, Unavailable
from auditclient.options import ClientOptions, channel_options

from .conftest import fast_options
from .fakes import FakeAuditService, FakeServer

UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "replica restarting", ())


class TestReadRetries:
    """The service config retries UNAVAILABLE on GetLeader, GetStatus and ListGaps."""

    async def test_get_status_survives_two_unavailable(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """Two UNAVAILABLE answers then success: get_status succeeds after 3 calls."""
        service.failures["GetStatus"] = [UNAVAILABLE, UNAVAILABLE]
        reply = await client.get_status()
        assert reply.replica_id == "replica-a"
        assert service.calls["GetStatus"] == 3

    async def test_list_gaps_and_get_leader_are_retried(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """GetLeader and ListGaps are retried the same way."""
        service.failures["GetLeader"] = [UNAVAILABLE]
        service.failures["ListGaps"] = [UNAVAILABLE]
        await client.get_leader()
        assert [g async for g in client.list_gaps()] == []
        assert (service.calls["GetLeader"], service.calls["ListGaps"]) == (2, 2)

    async def test_reads_give_up_after_max_attempts(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """A read that stays UNAVAILABLE raises after max_attempts (5) calls."""
        service.always["GetLeader"] = UNAVAILABLE
        with pytest.raises(Unavailable):
            await client.get_leader()
        assert service.calls["GetLeader"] == 5

    def test_service_config_names_only_reads(self) -> None:
        """The retry policy covers exactly the three reads with the agreed backoff."""
        options = dict(channel_options(ClientOptions()))
        assert options["grpc.enable_retries"] == 1
        (method_config,) = json.loads(str(options["grpc.service_config"]))["methodConfig"]
        assert sorted(n["method"] for n in method_config["name"]) == [
            "GetLeader",
            "GetStatus",
            "ListGaps",
        ]
        assert {n["service"] for n in method_config["name"]} == {"auditpb.v1.AuditService"}
        assert method_config["retryPolicy"] == {
            "maxAttempts": 5,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }


class TestMutationRetries:
    """RunAudit and ResolveDuplicates are retried only with a caller's request_id."""

    async def test_run_audit_without_request_id_is_sent_once(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """UNAVAILABLE on a generated request_id surfaces after a single call."""
        service.failures["RunAudit"] = [UNAVAILABLE]
        with pytest.raises(Unavailable):
            await client.run_audit(["BTCUSDT"])
        assert service.calls["RunAudit"] == 1

    async def test_run_audit_with_request_id_is_retried(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """With request_id the call is repeated with the same key and succeeds."""
        service.failures["RunAudit"] = [UNAVAILABLE, UNAVAILABLE]
        reply = await client.run_audit(["BTCUSDT"], request_id="audit-42")
        assert reply.cycle.cycle_id == "cycle-1"
        assert [r.request_id for r in service.requests["RunAudit"]] == ["audit-42"] * 3

    async def test_resolve_duplicates_follows_the_same_rule(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """ResolveDuplicates: once without request_id, retried with it."""
        service.failures["ResolveDuplicates"] = [UNAVAILABLE, UNAVAILABLE]
        with pytest.raises(Unavailable):
            await client.resolve_duplicates("BTCUSDT", "1m")
        reply = await client.resolve_duplicates("BTCUSDT", "1m", request_id="dup-1")
        assert reply.request_id == "dup-1"
        assert service.calls["ResolveDuplicates"] == 3

    async def test_no_leader_is_retried_with_request_id(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """A brief election (no leader) is ridden out when the call is idempotent."""
        service.failures["RunAudit"] = [(grpc.StatusCode.UNAVAILABLE, "no leader is known", ())]
        await client.run_audit(request_id="k")
        assert service.calls["RunAudit"] == 2

    async def test_retries_are_bounded(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """A mutation that stays unavailable stops after mutating_max_attempts calls."""
        service.always["RunAudit"] = (grpc.StatusCode.UNAVAILABLE, "no leader is known", ())
        with pytest.raises(NoLeader):
            await client.run_audit(request_id="k")
        assert service.calls["RunAudit"] == client.options.mutating_max_attempts == 3

    async def test_other_errors_are_not_retried(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """INVALID_ARGUMENT is final even with a request_id."""
        service.always["RunAudit"] = (grpc.StatusCode.INVALID_ARGUMENT, "bad window", ())
        with pytest.raises(InvalidArgument):
            await client.run_audit(request_id="k")
        assert service.calls["RunAudit"] == 1

    async def test_retries_fit_in_one_deadline(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """Backoff that would overrun the call's deadline is not slept: the error surfaces."""
        service.always["RunAudit"] = UNAVAILABLE
        options = fast_options(
            server.target, timeout=0.3, retry_initial_backoff=1.0, retry_max_backoff=1.0
        )
        async with AuditClient(options=options) as client:
            with pytest.raises(Unavailable):
                await client.run_audit(request_id="k")
        assert service.calls["RunAudit"] == 1
