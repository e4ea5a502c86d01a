"""Database faults with a real SecantusDB that the test stops and restarts:
down at start, lost by the leader, dead mid-cycle, and back again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
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
            error = await _cut_off_a_cycle(replica, db, end)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
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


class TestClientOutlivesCancelledCalls:
    """The service's client serves again after an outage in which bounded calls were cut off.

    On Python 3.11 this hung the client for good without driver_compat: the
    topology lock stayed with a cancelled condition wait (every run of a 6 s
    outage). The leader of the CI failure above never led again.
    """

    async def test_reads_succeed_after_the_database_returns(self, db):
        db.start()
        handle = connect(db.uri, "compat", 1000)
        col = handle.db["probe"]
        await col.insert_one({"_id": 1})
        cut_off = 0

        async def bounded_reads() -> None:
            nonlocal cut_off
            while True:
                try:
                    # Bounds spread over the driver's own 0.5 s condition waits, so that
                    # some cut a wait off just as the driver times it out itself.
                    await asyncio.wait_for(col.find_one({"_id": 1}), random.uniform(0.2, 1.2))
                except TimeoutError:
                    cut_off += 1
                except Exception:  # the outage's own errors are expected here
                    pass
                await asyncio.sleep(0.05)

        async def cut_off_enough() -> bool:
            return cut_off >= 400

        async def reads_again() -> bool:
            try:
                return await asyncio.wait_for(col.find_one({"_id": 1}), 2) is not None
            except Exception:
                return False

        readers = [asyncio.create_task(bounded_reads()) for _ in range(40)]
        try:
            db.stop()
            # Calls cut off by our own bound while the driver selects a server.
            await eventually(cut_off_enough, within=30)
            db.start()
            await eventually(reads_again, within=20)
        finally:
            for task in readers:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*readers)
            await handle.close()


class TestOutageOutlivesTheTerm:
    """A cycle failed by an outage that also ended its term is still recorded."""

    async def test_failed_cycle_recorded_by_the_next_term(self, db, tmp_path):
        """Stored once the replica leads again, under the new term's fence, with its own epoch."""
        db.start()
        handle = connect(db.uri, "faults", 2000)
        end = 1_767_225_600_000
        docs, _ = demo_series("S00", "1m", end, 1440)
        await handle.db["candles_S00_1m"].insert_many(docs)
        replica = ReplicaProcess(
            "r1",
            db.uri,
            "faults",
            tmp_path,
            AUDIT_SYMBOLS="S00",
            AUDIT_TIMEFRAMES="1m",
            LEADER_ELECTION_HEARTBEAT_INTERVAL="0.5",
            LEADER_ELECTION_TIMEOUT="3",
        )
        replica.start()
        try:
            await one_leader([replica], within=15)
            first = (await replica.status()).epoch
            await _cut_off_a_cycle(replica, db, end)
            # The outage outlives the renew deadline: the term that ran the cycle ends.
            await eventually(lambda: _role(replica, pb.ROLE_FOLLOWER), within=15)
            assert (await replica.status()).last_cycle.status == pb.CYCLE_STATUS_FAILED
            db.start()
            await one_leader([replica], within=30)
            assert (await replica.status()).epoch > first
            reply = await replica.stub.RunAudit(pb.RunAuditRequest(symbols=["S00"]), timeout=60)
            assert reply.cycle.status == pb.CYCLE_STATUS_SUCCEEDED
            failed = await handle.db["audit_cycles"].find_one({"succeeded": False})
            assert failed is not None and failed["error"]
            assert failed["epoch"] == first
        finally:
            await replica.close()
            await handle.close()


async def _cut_off_a_cycle(
    replica: ReplicaProcess, db: SecantusDB, end: int
) -> grpc.aio.AioRpcError:
    """Starts a RunAudit over the day before ``end``, stops the database once the
    cycle has started, and returns the error the call ends with."""
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
    return err.value


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
