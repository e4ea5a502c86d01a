"""Forwarding to a leader that is gone: the follower answers the standard "no leader"
UNAVAILABLE (never grpc's bare "failed to connect"), names only a leader whose lease
still holds, and closes channels to addresses that are no longer the leader."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from auditclient import NoLeader, from_rpc_error
from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.values import Role
from auditsvc.ops.metrics import Metrics
from auditsvc.transport.forwarding import Forwarder, ForwardingGate
from auditsvc.transport.interceptors import CallInterceptor
from auditsvc.transport.server import MUTATING, SERVICE_NAME
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.support import SecantusDB, eventually, free_port

TIMEOUT = 10.0
NO_LEADER_REASONS = {"NO_LEADER", "LEADER_UNREACHABLE", "NOT_LEADER"}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=":memory:")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.close)


@pytest.mark.slow
class TestSigkilledLeader:
    """A follower asked to mutate right after the leader is SIGKILLed."""

    async def test_follower_answers_no_leader(self, db: SecantusDB, tmp_path: Path) -> None:
        """Every failure until the new leader serves is NoLeader; the first names the dead one."""
        # A long lease: the follower still believes in the dead leader when we call.
        env = {
            "AUDIT_SYMBOLS": "BTCUSDT",
            "AUDIT_TIMEFRAMES": "1m",
            "LEADER_ELECTION_HEARTBEAT_INTERVAL": "0.5",
            "LEADER_ELECTION_TIMEOUT": "6",
        }
        replicas = [ReplicaProcess(f"r{i}", db.uri, "deadleader", tmp_path, **env) for i in (1, 2)]
        try:
            for replica in replicas:
                await asyncio.to_thread(replica.start)
            leader = await one_leader(replicas, within=30)
            follower = next(r for r in replicas if r is not leader)

            async def follows() -> bool:
                # The follower's own view, not the stored lease: it is what forwarding uses.
                return (await follower.status()).leader_id == leader.name

            await eventually(follows, within=TIMEOUT)
            leader.signal(signal.SIGKILL)
            await asyncio.to_thread(leader.wait_exit, TIMEOUT)

            failures: list[Any] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    await follower.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
                    break  # the follower has taken over
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("the follower never took over")
        finally:
            for replica in replicas:
                await replica.close()

        assert failures, "the first call after SIGKILL was served; the lease was not long enough"
        errors = [from_rpc_error(exc) for exc in failures]
        for error in errors:
            assert isinstance(error, NoLeader), error
            assert error.reason in NO_LEADER_REASONS, error
            assert "no leader" in error.details.lower(), error
        first = errors[0]
        assert first.reason == "LEADER_UNREACHABLE", first
        assert first.leader_address == leader.target


class _Lapsed:
    """A follower's view: it saw a leader once, but that lease has expired."""

    role = Role.FOLLOWER
    epoch = 3

    def term(self) -> None:
        return None

    def last_known_address(self) -> str:
        return ""

    def last_seen_address(self) -> str:
        return "127.0.0.1:1"

    def known_leader(self) -> str:
        return ""


class TestExpiredLeaderIsNotNamed:
    """A refused mutation names no leader once that leader's lease has expired."""

    async def test_no_trailer(self) -> None:
        """UNAVAILABLE NO_LEADER, and no x-audit-leader pointing at the lapsed leader."""
        forwarder = Forwarder("me", Metrics())
        gate = ForwardingGate(MUTATING, _Lapsed(), forwarder, lambda: None)  # type: ignore[arg-type]
        interceptor = CallInterceptor(f"/{SERVICE_NAME}/", Metrics(), router=gate)
        server = grpc.aio.server(interceptors=[interceptor])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(f"/{SERVICE_NAME}/RunAudit")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(b"", timeout=TIMEOUT)
        finally:
            await server.stop(None)
            await forwarder.close()
        error = from_rpc_error(err.value)
        assert isinstance(error, NoLeader)
        assert (error.reason, error.leader_address) == ("NO_LEADER", None)


class TestForwarderChannels:
    """Only the current leader's address keeps an open channel."""

    async def test_old_channel_closed_after_leader_change(self) -> None:
        """Asking for a new leader's channel closes the previous leader's."""
        forwarder = Forwarder("me", Metrics(), retire_grace_s=0.0)
        old_address, new_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        try:
            old = forwarder.channel(old_address)
            assert forwarder.channel(old_address) is old  # pooled, not one per call
            new = forwarder.channel(new_address)

            async def closed() -> bool:
                return forwarder.channels_closed == 1

            await eventually(closed, within=TIMEOUT)
            with pytest.raises(grpc.aio.UsageError):
                await old.unary_unary("/x/y")(b"", timeout=TIMEOUT)
            assert forwarder.channel(new_address) is new
            assert forwarder.channels_opened == 2
        finally:
            await forwarder.close()
        assert forwarder.channels_closed == 2
