"""Database faults with a real SecantusDB that the test stops and restarts:
down at start, lost by the leader, dead mid-cycle, and back again."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect
from auditsvc.transport.server import SERVICE_NAME
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

HEARTBEAT, TIMEOUT = 0.3, 1.2
MARGIN = 3.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    yield server
    server.close()


async def _readiness(replica: ReplicaProcess) -> int:
    stub = health_pb2_grpc.HealthStub(replica.stub and replica.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    return int(reply.status)


def _events(replica: ReplicaProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in replica.log_path.read_text().splitlines() if line]


class TestDatabaseDownAtStart:
    """A replica whose database is down at start stays up, not ready, and recovers alone."""

    async def test_starts_unready_then_serves_when_db_appears(self, db, tmp_path):
        """Readiness is NOT_SERVING until the database appears, then SERVING, no restart."""
        replica = ReplicaProcess("r1", db.uri, "faults", tmp_path, MONGODB_TIMEOUT_MS="300")
        replica.start()
        try:
            serving = health_pb2.HealthCheckResponse.SERVING
            assert await _readiness(replica) != serving
            status = await replica.status()
            assert status.role == pb.ROLE_FOLLOWER and not status.database_reachable
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # The clear log line, with the capped backoff, comes before the DB does.
            lines = await eventually(lambda: _unreachable_lines(replica), within=15)
            assert "retry_in_s" in lines[0] and "reason" in lines[0]
            db.start()
            await eventually(lambda: _is(replica, serving), within=30)
            await one_leader([replica], within=10)
            assert replica.alive
        finally:
            await replica.close()


class TestLeaderLosesDatabase:
    """The leader steps down at the renew deadline and leads again once the DB is back."""

    async def test_steps_down_then_resumes(self, db, tmp_path):
        """Role goes to follower within the renew deadline; a leader returns afterwards."""
        db.start()
        replica = ReplicaProcess(
            "r1",
            db.uri,
            "faults",
            tmp_path,
            ENABLE_AUDITOR="true",
            AUDIT_INTERVAL="0.5",
            AUDIT_STARTUP_DELAY="0",
            AUDIT_SYMBOLS="BTCUSDT",
            AUDIT_TIMEFRAMES="1m",
        )
        replica.start()
        try:
            await one_leader([replica], within=15)
            db.stop()
            began = time.monotonic()
            await eventually(lambda: _role(replica, pb.ROLE_FOLLOWER), within=TIMEOUT + MARGIN)
            assert time.monotonic() - began < TIMEOUT + MARGIN
            db.start()
            await one_leader([replica], within=30)
            handle = connect(db.uri, "faults", 2000)
            try:
                since = time.time()
                await eventually(lambda: _cycle_after(handle, since), within=30)
            finally:
                await handle.close()
        finally:
            await replica.close()


class TestDatabaseDiesMidCycle:
    """A cycle cut off by the database ends as failed with its reason, and the next retries."""

    async def test_failed_cycle_recorded_and_retried(self, db, tmp_path):
        """The failed cycle is stored with its error once the DB is back, then cycles succeed."""
        db.start()
        handle = connect(db.uri, "faults", 2000)
        symbols = [f"S{i:02d}" for i in range(12)]
        end = 1_767_225_600_000
        for sym in symbols:
            docs, _ = demo_series(sym, "1m", end, 1440)
            await handle.db[f"candles_{sym}_1m"].insert_many(docs)
        replica = ReplicaProcess(
            "r1",
            db.uri,
            "faults",
            tmp_path,
            AUDIT_SYMBOLS=",".join(symbols),
            AUDIT_TIMEFRAMES="1m",
            AUDIT_CONCURRENCY="2",
            LEADER_ELECTION_HEARTBEAT_INTERVAL="2",
            LEADER_ELECTION_TIMEOUT="30",
        )
        replica.start()
        try:
            await one_leader([replica], within=15)
            call = replica.stub.RunAudit(
                pb.RunAuditRequest(
                    start_time={"seconds": end // 1000 - 86400}, end_time={"seconds": end // 1000}
                ),
                timeout=60,
            )
            await eventually(lambda: _cycle_started(replica), within=20, interval=0.01)
            db.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            status = await replica.status()
            assert status.last_cycle.status == pb.CYCLE_STATUS_FAILED
            assert status.last_cycle.error
            db.start()
            await one_leader([replica], within=30)
            reply = await replica.stub.RunAudit(pb.RunAuditRequest(symbols=["S00"]), timeout=60)
            assert reply.cycle.status == pb.CYCLE_STATUS_SUCCEEDED
            failed = await handle.db["audit_cycles"].find_one({"succeeded": False})
            assert failed is not None and failed["error"]
        finally:
            await replica.close()
            await handle.close()


async def _unreachable_lines(replica: ReplicaProcess) -> list[dict[str, object]]:
    return [e for e in _events(replica) if "unreachable" in str(e.get("event"))]


async def _is(replica: ReplicaProcess, status: int) -> bool:
    return await _readiness(replica) == status


async def _role(replica: ReplicaProcess, role: int) -> bool:
    return (await replica.status()).role == role


async def _cycle_after(handle: object, since: float) -> bool:
    import datetime as dt

    col = handle.db["audit_cycles"]  # type: ignore[attr-defined]
    after = dt.datetime.fromtimestamp(since, tz=dt.UTC)
    return await col.count_documents({"succeeded": True, "started_at": {"$gt": after}}) > 0


async def _cycle_started(replica: ReplicaProcess) -> bool:
    return any(e.get("event") == "audit cycle started" for e in _events(replica))
