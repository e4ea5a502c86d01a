"""Two take-overs in a row never forget an orphan transaction.

r1 dies inside a fenced batch (``fence.before_commit``), leaving a transaction
open on its batch session. r2 is granted the next term and dies before it
records its own session (``leadership.before_take_office``). r3 takes the term
after that: it must still find r1's session in the lease, kill it, mark it
killed, and serve a fenced RunAudit at once instead of meeting the orphan's
locks until the server's transaction lifetime (minutes on SecantusDB) runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.ops.failpoints import CRASH_EXIT_CODE
from auditsvc.storage.mongo.database import connect
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

END_MS = 1_767_225_600_000
SLOTS = 120
HEARTBEAT, TIMEOUT = 0.5, 3.0
# Polling deadlines only: generous, these machines are shared.
WAIT = 30.0
# The orphan is killed on taking office, so r3's first audit needs no lifetime to pass.
AUDIT_WITHIN = 15.0
DATABASE = "double_takeover"
COLLECTION = "candles_BTCUSDT_1m"


def _ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000)


AUDIT = pb.RunAuditRequest(start_time=_ts(END_MS - SLOTS * 60_000), end_time=_ts(END_MS))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusDB]:
    """One database server for the module; each test uses its own database."""
    db = SecantusDB(storage=str(tmp_path_factory.mktemp("db")))
    db.start()
    yield db
    db.close()


@pytest.fixture
async def handle(server: SecantusDB) -> AsyncIterator[Any]:
    database = connect(server.uri, DATABASE, 2000)
    docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
    await asyncio.wait_for(database.db[COLLECTION].insert_many(docs), WAIT)
    try:
        yield database
    finally:
        await database.close()


async def _lease(handle: Any) -> dict[str, Any]:
    doc: dict[str, Any] | None = await asyncio.wait_for(
        handle.db["leader_election"].find_one({"_id": "auditsvc"}), 10
    )
    assert doc is not None
    return doc


async def _leads(replica: ReplicaProcess) -> bool:
    try:
        return bool((await replica.status()).role == pb.ROLE_LEADER)
    except grpc.aio.AioRpcError:
        return False


class TestDoubleTakeover:
    """The first orphan's session survives a term that never recorded its own."""

    async def test_first_orphan_killed_after_two_takeovers(
        self, server: SecantusDB, handle: Any, tmp_path: Path
    ) -> None:
        """r3 kills r1's orphan (marked killed in the lease) and its RunAudit succeeds at once."""
        made: list[ReplicaProcess] = []

        def replica(name: str, failpoints: str = "") -> ReplicaProcess:
            env = {
                "AUDIT_SYMBOLS": "BTCUSDT",
                "AUDIT_TIMEFRAMES": "1m",
                "LEADER_ELECTION_HEARTBEAT_INTERVAL": str(HEARTBEAT),
                "LEADER_ELECTION_TIMEOUT": str(TIMEOUT),
            }
            if failpoints:
                env["AUDITSVC_FAILPOINTS"] = failpoints
            made.append(ReplicaProcess(name, server.uri, DATABASE, tmp_path, **env))
            return made[-1]

        try:
            r1 = replica("r1", "fence.before_commit=1")
            r1.start()
            await one_leader([r1], within=WAIT)
            first = await _lease(handle)
            orphan = first["session"]
            assert orphan is not None, "r1 recorded no batch session"
            r2 = replica("r2", "leadership.before_take_office=1")
            r2.start()
            # r1 dies inside its batch, with its transaction open on `orphan`.
            call = asyncio.ensure_future(r1.stub.RunAudit(AUDIT, timeout=WAIT))
            assert await asyncio.to_thread(r1.wait_exit, WAIT) == CRASH_EXIT_CODE
            call.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(call, WAIT)
            # r2 is granted the next term and dies before recording its session.
            assert await asyncio.to_thread(r2.wait_exit, WAIT) == CRASH_EXIT_CODE
            second = await _lease(handle)
            assert (second["replica_id"], second["epoch"]) == ("r2", first["epoch"] + 1)
            assert second.get("session") is None
            assert second["predecessor_session"] == orphan
            r3 = replica("r3")
            r3.start()
            await eventually(lambda: _leads(r3), within=WAIT)
            third = await _lease(handle)
            assert (third["replica_id"], third["epoch"]) == ("r3", first["epoch"] + 2)
            assert third["predecessor_session"] == orphan
            assert third["predecessor_killed"] is True
            reply = await r3.stub.RunAudit(AUDIT, timeout=AUDIT_WITHIN)
            assert (reply.cycle.served_by, reply.cycle.epoch) == ("r3", third["epoch"])
            stored = await asyncio.wait_for(
                handle.db["audit_cycles"].count_documents({"epoch": third["epoch"]}), 10
            )
            assert stored == 1
        finally:
            for r in made:
                await r.close()
