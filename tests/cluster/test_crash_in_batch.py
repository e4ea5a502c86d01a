"""A leader killed or paused at any point of a fenced batch (the failpoints
``fence.*``) delays the take-over by at most lease timeout + heartbeat + 2 s,
measured on the database's clock, and the new leader's fenced writes succeed at
once; a paused batch never commits after the take-over. Also: a restart gets a
new epoch, and two processes with one REPLICA_ID never both lead."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.ops.failpoints import CRASH_EXIT_CODE
from auditsvc.storage.mongo.database import connect, to_ms
from tests.cluster.harness import ReplicaProcess, leaders, one_leader
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

END_MS = 1_767_225_600_000
SLOTS = 120
# A lease long enough that a loaded machine does not cost r1 its lease before the fault.
HEARTBEAT, TIMEOUT = 0.5, 3.0
# The documented bound's slack over lease timeout + heartbeat (docs/AUDITOR.md).
SLACK = 2.0
# Polling deadlines only: generous, these machines are shared.
WAIT = 30.0
DATABASE = "crash_in_batch"


def _ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000)


AUDIT = pb.RunAuditRequest(start_time=_ts(END_MS - SLOTS * 60_000), end_time=_ts(END_MS))


@pytest.fixture
async def handle(tmp_path: Path) -> AsyncIterator[Any]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    server.start()
    database = connect(server.uri, DATABASE, 2000)
    docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
    await database.db["candles_BTCUSDT_1m"].insert_many(docs)
    database.uri = server.uri  # type: ignore[attr-defined]
    database.server = server  # type: ignore[attr-defined]
    try:
        yield database
    finally:
        await database.close()
        server.close()


@pytest.fixture
async def replicas(handle: Any, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[ReplicaProcess] = []

    def make(name: str, replica_id: str | None = None, **env: str) -> ReplicaProcess:
        replica = ReplicaProcess(
            name,
            handle.uri,
            DATABASE,
            tmp_path,
            AUDIT_SYMBOLS="BTCUSDT",
            AUDIT_TIMEFRAMES="1m",
            LEADER_ELECTION_HEARTBEAT_INTERVAL=str(HEARTBEAT),
            LEADER_ELECTION_TIMEOUT=str(TIMEOUT),
            **env,
        )
        if replica_id is not None:
            replica.env["REPLICA_ID"] = replica_id
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.close()


async def _lease(handle: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        doc: dict[str, Any] | None = await handle.db["leader_election"].find_one(
            {"_id": "auditsvc"}
        )
    assert doc is not None
    return doc


def _stopped(replica: ReplicaProcess) -> bool:
    assert replica.proc is not None
    stat = Path(f"/proc/{replica.proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


async def _wait_until(check: Any, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


POINTS = [
    ("fence.before_check=1", "kill"),
    ("fence.before_work=1", "kill"),
    ("fence.before_touch=1", "kill"),
    ("fence.before_commit=1", "kill"),
    ("fence.after_commit=1", "kill"),
    ("fence.before_commit=1:stop", "stop"),
]


class TestCrashInBatch:
    """Failover is bounded wherever in a fenced batch the leader dies or freezes."""

    @pytest.mark.parametrize(("failpoint", "mode"), POINTS)
    async def test_takeover_is_bounded(self, handle, replicas, failpoint, mode):
        """Take-over within timeout + heartbeat + 2 s (DB clock); the new leader audits at once."""
        first = replicas("r1")
        first.env["AUDITSVC_FAILPOINTS"] = failpoint
        first.start()
        await one_leader([first], within=WAIT)
        second = replicas("r2")
        second.start()
        await eventually(lambda: _is_follower(second), within=WAIT)
        old = await _lease(handle)
        assert old["replica_id"] == "r1"
        call = asyncio.ensure_future(first.stub.RunAudit(AUDIT, timeout=WAIT))
        try:
            if mode == "kill":
                assert await asyncio.to_thread(first.wait_exit, WAIT) == CRASH_EXIT_CODE
            else:
                await _wait_until(lambda: _stopped(first))
            last = await _lease(handle)
            assert (last["replica_id"], last["epoch"]) == ("r1", old["epoch"])
            await eventually(lambda: _leads(second), within=WAIT)
            new = await _lease(handle)
            assert (new["replica_id"], new["epoch"]) == ("r2", old["epoch"] + 1)
            late_ms = to_ms(new["acquired_at"]) - to_ms(last["expires_at"])
            assert late_ms <= (HEARTBEAT + SLACK) * 1000, f"take-over {late_ms} ms after expiry"
            reply = await second.stub.RunAudit(AUDIT, timeout=WAIT)
            assert (reply.cycle.served_by, reply.cycle.epoch) == ("r2", new["epoch"])
            if mode == "stop":
                first.signal(__import__("signal").SIGCONT)
                await eventually(lambda: _is_follower(first), within=WAIT)
        finally:
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
        if not failpoint.startswith("fence.after_commit"):  # the cut-off batch never landed
            committed = await handle.db["audit_series"].count_documents({"epoch": old["epoch"]})
            assert committed == 0


class TestIdentity:
    """A process start is a new term; one REPLICA_ID in two processes is two holders."""

    async def test_sigkill_and_restart_gets_new_epoch(self, handle, replicas):
        """A leader SIGKILLed and restarted at once under the same REPLICA_ID leads at epoch + 1."""
        first = replicas("r1")
        first.start()
        await one_leader([first], within=WAIT)
        old = await _lease(handle)
        first.proc.kill()  # type: ignore[union-attr]
        first.wait_exit()
        again = replicas("r1")
        again.start()
        await eventually(lambda: _leads(again), within=WAIT)
        new = await _lease(handle)
        assert new["epoch"] == old["epoch"] + 1
        assert new["holder"] != old["holder"] and new["replica_id"] == "r1"

    async def test_twins_never_both_lead(self, handle, replicas):
        """Two live processes with one REPLICA_ID: one leads, the other follows, over many polls."""
        twins = [replicas("a", replica_id="same"), replicas("b", replica_id="same")]
        for twin in twins:
            twin.start()
        await one_leader(twins, within=WAIT)
        for _ in range(40):  # a few lease periods of polls; every one must see one leader
            assert len(await leaders(twins)) == 1
            await asyncio.sleep(HEARTBEAT / 2)
        lease = await _lease(handle)
        assert lease["replica_id"] == "same"
        warned = "another process holds the lease under this REPLICA_ID"
        assert any(warned in twin.log_path.read_text() for twin in twins)


async def _leads(replica: ReplicaProcess) -> bool:
    try:
        return bool((await replica.status()).role == pb.ROLE_LEADER)
    except grpc.aio.AioRpcError:
        return False


async def _is_follower(replica: ReplicaProcess) -> bool:
    try:
        return bool((await replica.status()).role == pb.ROLE_FOLLOWER)
    except grpc.aio.AioRpcError:
        return False


class TestLostDatabase:
    """With the database gone, reads fail fast and nothing is logged as unretrieved."""

    async def test_get_leader_fails_fast_and_status_leaves_no_orphan(self, handle, replicas):
        """GetLeader answers UNAVAILABLE before a long deadline; GetStatus leaves no orphan task."""
        replica = replicas("r1")
        replica.start()
        await one_leader([replica], within=WAIT)
        handle.server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await replica.stub.GetLeader(pb.GetLeaderRequest(), timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        for _ in range(5):  # impatient callers leave the shared status read behind
            with contextlib.suppress(grpc.aio.AioRpcError):
                await replica.stub.GetStatus(pb.GetStatusRequest(), timeout=0.05)
        await replica.status()
        await replica.close()
        assert "Task exception was never retrieved" not in replica.log_path.read_text()
