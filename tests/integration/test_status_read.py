"""GetStatus's shared read of the last cycle: one object per stored cycle, so it is
converted once, and a read bounded by MONGODB_TIMEOUT_MS (issue 11, smaller items)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from auditsvc.ops.settings import Settings
from auditsvc.usecases.status_cache import STATUS_CACHE_S
from tests.support import SecantusDB, eventually, replica_env

TIMEOUT = 10.0
SERIES = {"symbols": ["BTCUSDT"], "timeframes": ["1m"]}


class TestStatusCache:
    """The stored cycle is decoded into one object until it changes."""

    async def test_same_cycle_same_object_until_a_new_one(
        self, make_settings, start_replica
    ) -> None:
        """Re-reads of an unchanged cycle return the same object; a new cycle replaces it."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        service = replica.app.service
        first = await replica.stub.RunAudit(pb.RunAuditRequest(**SERIES), timeout=TIMEOUT)
        before = (await service.status()).last_cycle
        assert before is not None and before.cycle_id == first.cycle.cycle_id
        await asyncio.sleep(STATUS_CACHE_S * 2)  # let the shared read expire: a fresh read
        assert (await service.status()).last_cycle is before
        reply = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        assert reply.last_cycle.cycle_id == first.cycle.cycle_id

        second = await replica.stub.RunAudit(pb.RunAuditRequest(**SERIES), timeout=TIMEOUT)

        async def changed() -> bool:
            reply = await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
            return bool(reply.last_cycle.cycle_id == second.cycle.cycle_id)

        await eventually(changed, within=TIMEOUT)
        after = (await service.status()).last_cycle
        assert after is not before and after is not None
        assert after.cycle_id == second.cycle.cycle_id


async def _first_unhealthy(stub: Any) -> tuple[grpc.StatusCode, str]:
    """Polls GetStatus until it stops answering OK with a reachable database."""
    outcome: list[tuple[grpc.StatusCode, str]] = []

    async def unhealthy() -> bool:
        try:
            reply = await stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            outcome.append((exc.code(), exc.details() or ""))
            return True
        if not reply.database_reachable:
            outcome.append((grpc.StatusCode.OK, "database_reachable=false"))
        return bool(outcome)

    await eventually(unhealthy, within=3 * TIMEOUT)
    return outcome[0]


class TestStatusReadTimeout:
    """A database that stops answering makes GetStatus UNAVAILABLE, naming the cause."""

    async def test_frozen_database_is_unavailable_not_a_hang(self, start_replica) -> None:
        """With the database frozen, GetStatus answers UNAVAILABLE naming MONGODB_TIMEOUT_MS."""
        db = SecantusDB()
        db.start()
        assert db.proc is not None
        pid = db.proc.pid
        replica = None
        try:
            env = replica_env(db.uri, f"t_{uuid.uuid4().hex[:12]}", MONGODB_TIMEOUT_MS="500")
            replica = await start_replica(Settings.from_env({**env, "LIVE_MODE": "off"}))
            await replica.stub.RunAudit(pb.RunAuditRequest(**SERIES), timeout=TIMEOUT)
            seen = []
            # Readiness may notice the frozen database first (then GetStatus rightly
            # answers OK, unreachable, without reading): freeze again, a few times.
            for _ in range(3):
                await eventually(lambda: _ready(replica), within=30)
                os.kill(pid, signal.SIGSTOP)
                try:
                    code, details = await _first_unhealthy(replica.stub)
                finally:
                    os.kill(pid, signal.SIGCONT)
                seen.append((code, details))
                if code is not grpc.StatusCode.OK:
                    break
            code, details = seen[-1]
            assert code is grpc.StatusCode.UNAVAILABLE, seen
            assert "MONGODB_TIMEOUT_MS" in details and "Traceback" not in details
        finally:
            os.kill(pid, signal.SIGCONT)
            if replica is not None:
                await replica.channel.close()
                await replica.app.stop()
            db.close()


async def _ready(replica: Any) -> bool:
    return bool(replica.app.ready)
