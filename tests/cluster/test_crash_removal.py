"""Crash-safe duplicate removal: the process is killed at exact points of a
removal (between archive and delete, after a batch), with and without
transactions, and the database is checked after each crash and after the
re-run of the same request_id."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bson import ObjectId

from auditpb.v1 import audit_pb2 as pb
from auditsvc.ops.failpoints import CRASH_EXIT_CODE
from auditsvc.storage.mongo.database import connect, to_dt
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.support import BIN, SecantusDB, process_env, replica_env

pytestmark = [
    pytest.mark.slow,
    # killAllSessions and killed replicas make the server drop the test client's
    # pooled connections; PyMongo then discards one without closing its socket,
    # and the ResourceWarning from its garbage collection failed this module twice
    # (2 of about 10 runs, under load). The driver's, not the service's: scoped here.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]

END_MS = 1_767_225_600_000
GROUPS = 90  # several batches of BATCH_GROUPS
COLLECTION = "candles_BTCUSDT_1m"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    server.start()
    yield server
    server.close()


async def _seed(handle: Any) -> list[dict[str, Any]]:
    docs = []
    for i in range(GROUPS):
        ts = to_dt(END_MS - (i + 1) * 60_000)
        for copy in range(2 + i % 2):  # groups of two and three documents
            docs.append({"_id": ObjectId(), "symbol": "BTCUSDT", "timestamp": ts, "v": copy})
    await handle.db[COLLECTION].insert_many(docs)
    return docs


def _request(request_id: str) -> pb.ResolveDuplicatesRequest:
    return pb.ResolveDuplicatesRequest(
        symbol="BTCUSDT",
        timeframe="1m",
        start_time={"seconds": (END_MS - (GROUPS + 1) * 60_000) // 1000},
        end_time={"seconds": END_MS // 1000},
        request_id=request_id,
    )


async def _check_nothing_lost(
    handle: Any, originals: list[dict[str, Any]], request_id: str
) -> None:
    present = {d["_id"] for d in await handle.db[COLLECTION].find({}, {"_id": 1}).to_list(None)}
    archive = await handle.db["duplicate_archive"].find({"request_id": request_id}).to_list(None)
    archived = Counter(a["document"]["_id"] for a in archive)
    assert all(n == 1 for n in archived.values()), "a document was archived twice"
    for doc in originals:
        assert doc["_id"] in present or doc["_id"] in archived, f"lost {doc['_id']}"
    for entry in archive:
        original = next(d for d in originals if d["_id"] == entry["document"]["_id"])
        assert entry["document"] == original


CASES = [
    ("dedupe.between_archive_and_delete=1", "auto"),
    ("dedupe.between_archive_and_delete=2", "off"),
    ("dedupe.after_batch=1", "auto"),
    ("dedupe.after_batch=2", "off"),
]


class TestCrashSafeRemoval:
    """Every original survives each crash, and the re-run completes exactly once."""

    @pytest.mark.parametrize(("failpoint", "transactions"), CASES)
    async def test_killed_then_completed_then_restored(self, db, tmp_path, failpoint, transactions):
        """Crash → nothing lost; re-run → one per group left; restore → the original set."""
        handle = connect(db.uri, "crash", 2000)
        try:
            originals = await _seed(handle)
            env = {
                "AUDIT_SYMBOLS": "BTCUSDT",
                "AUDIT_TIMEFRAMES": "1m",
                "ENABLE_DUPLICATE_REMOVAL": "true",
                "MONGODB_TRANSACTIONS": transactions,
                # Removal batches on SecantusDB take a few hundred ms; keep the
                # renew deadline comfortably above that.
                "LEADER_ELECTION_HEARTBEAT_INTERVAL": "1",
                "LEADER_ELECTION_TIMEOUT": "4",
            }
            crashing = ReplicaProcess("r1", db.uri, "crash", tmp_path, **env)
            crashing.env["AUDITSVC_FAILPOINTS"] = failpoint
            crashing.start()
            await one_leader([crashing], within=15)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await crashing.stub.ResolveDuplicates(_request("rm-1"), timeout=60)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert crashing.wait_exit() == CRASH_EXIT_CODE
            await crashing.close()
            await _check_nothing_lost(handle, originals, "rm-1")
            # What the runbook tells an operator to do after a crash mid-transaction:
            # abort the dead process's sessions instead of waiting for the server's
            # transaction lifetime limit. Without it the re-run below still succeeds,
            # only later.
            await handle.client.admin.command({"killAllSessions": []})

            survivor = ReplicaProcess("r2", db.uri, "crash", tmp_path, **env)
            survivor.start()
            await one_leader([survivor], within=15)
            # A transaction the crash left open holds its locks until the server
            # aborts it (transactionLifetimeLimitSeconds); until then the re-run
            # is refused with UNAVAILABLE, as a client would see, and retried.
            reply = await _retry_unavailable(
                lambda: survivor.stub.ResolveDuplicates(_request("rm-1"), timeout=60), within=150
            )
            await survivor.close()
            await _check_nothing_lost(handle, originals, "rm-1")
            left = Counter(
                d["timestamp"] for d in await handle.db[COLLECTION].find({}).to_list(None)
            )
            assert len(left) == GROUPS and set(left.values()) == {1}
            surplus = sum(1 + i % 2 for i in range(GROUPS))
            archived = await handle.db["duplicate_archive"].count_documents({"request_id": "rm-1"})
            assert archived == surplus
            assert reply.duplicate_groups + (GROUPS - reply.duplicate_groups) == GROUPS

            restore = await _restore(db.uri, "rm-1")
            assert restore == 0
            now = sorted(
                str(d["_id"])
                for d in await handle.db[COLLECTION].find({}, {"_id": 1}).to_list(None)
            )
            assert now == sorted(str(d["_id"]) for d in originals)
        finally:
            await handle.close()


async def _retry_unavailable(call: Any, within: float) -> Any:
    import asyncio
    import time

    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


async def _restore(uri: str, request_id: str) -> int:
    import asyncio

    env = process_env(replica_env(uri, "crash"))
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "auditsvc"),
        "restore-duplicates",
        "--request-id",
        request_id,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 60)
