"""A copy that changes between the grouping and its batch is never removed.

The leader is frozen (``dedupe.before_batch=1:stop``) after it has grouped the
duplicates and decided which copies go, before its batch begins. The test then
edits, or moves to another slot, one copy marked for removal, and lets the
leader go on. That group must be left whole and reported (reply, audit log);
the other groups are removed as usual.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from auditpb.v1 import audit_pb2 as pb
from auditsvc.storage.mongo.database import connect, to_dt, to_ms
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.support import SecantusDB

pytestmark = pytest.mark.slow

END_MS = 1_767_225_600_000
M = 60_000
SLOTS = 3
COLLECTION = "candles_BTCUSDT_1m"
# A long renew deadline: the leader stays frozen while the test edits a copy.
ENV = {
    "AUDIT_SYMBOLS": "BTCUSDT",
    "AUDIT_TIMEFRAMES": "1m",
    "ENABLE_DUPLICATE_REMOVAL": "true",
    "LEADER_ELECTION_HEARTBEAT_INTERVAL": "1",
    "LEADER_ELECTION_TIMEOUT": "10",
    "AUDITSVC_FAILPOINTS": "dedupe.before_batch=1:stop",
}
WAIT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusDB]:
    """One database server for the module; each test uses its own database."""
    db = SecantusDB(storage=str(tmp_path_factory.mktemp("db")))
    db.start()
    yield db
    db.close()


@pytest.fixture
async def handle(server: SecantusDB, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    name = f"changed_{request.node.callspec.id}"
    h = connect(server.uri, name, 2000)
    h.name = name  # type: ignore[attr-defined]
    yield h
    await h.close()


def _slot(i: int) -> int:
    return END_MS - (i + 1) * M


async def _seed(handle: Any) -> list[dict[str, Any]]:
    """SLOTS minutes with two copies each; the second copy has the greater _id."""
    docs = [
        {"_id": ObjectId(), "symbol": "BTCUSDT", "timestamp": to_dt(_slot(i)), "close": copy}
        for i in range(SLOTS)
        for copy in range(2)
    ]
    await asyncio.wait_for(handle.db[COLLECTION].insert_many(docs), WAIT)
    return docs


def _stopped(replica: ReplicaProcess) -> bool:
    assert replica.proc is not None
    stat = Path(f"/proc/{replica.proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


async def _until_stopped(replica: ReplicaProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not _stopped(replica):
        assert replica.alive, "the replica exited instead of stopping at the failpoint"
        assert time.monotonic() < deadline, "the replica never reached dedupe.before_batch"
        await asyncio.sleep(0.02)


CHANGES = {
    # A writer's correction lands on the copy marked for removal.
    "edited": {"$set": {"close": 99}},
    # The copy marked for removal moves to a slot outside the request's window.
    "moved": {"$set": {"timestamp": to_dt(END_MS + 60 * M)}},
}


class TestChangedCopy:
    """A group changed after grouping is skipped, reported, and left whole."""

    @pytest.mark.parametrize("change", sorted(CHANGES))
    async def test_changed_group_is_kept_and_reported(
        self, server: SecantusDB, handle: Any, tmp_path: Path, change: str
    ) -> None:
        """The changed copy survives as changed; reply and audit log name its slot."""
        docs = await _seed(handle)
        target = docs[2]  # slot 1's older copy: keep_newest removes it
        replica = ReplicaProcess("r1", server.uri, handle.name, tmp_path, **ENV)
        replica.start()
        try:
            await one_leader([replica], within=WAIT)
            call = asyncio.ensure_future(
                replica.stub.ResolveDuplicates(
                    pb.ResolveDuplicatesRequest(
                        symbol="BTCUSDT",
                        timeframe="1m",
                        strategy=pb.STRATEGY_KEEP_NEWEST,
                        start_time={"seconds": _slot(SLOTS) // 1000},
                        end_time={"seconds": END_MS // 1000},
                        request_id=f"changed-{change}",
                    ),
                    timeout=WAIT,
                )
            )
            await _until_stopped(replica)
            updated = await asyncio.wait_for(
                handle.db[COLLECTION].update_one({"_id": target["_id"]}, CHANGES[change]), WAIT
            )
            assert updated.modified_count == 1
            replica.signal(signal.SIGCONT)
            reply = await asyncio.wait_for(call, WAIT)
        finally:
            await replica.close()
        assert (reply.duplicate_groups, reply.documents_removed) == (SLOTS, SLOTS - 1)
        assert reply.groups_skipped == 1
        assert [t.ToMilliseconds() for t in reply.skipped_groups] == [_slot(1)]
        assert "skipped 1 groups" in reply.message
        left = await asyncio.wait_for(handle.db[COLLECTION].find({}).to_list(None), WAIT)
        by_id = {d["_id"]: d for d in left}
        changed = by_id[target["_id"]]
        assert changed["close"] == (99 if change == "edited" else 0)
        assert to_ms(changed["timestamp"]) == (_slot(1) if change == "edited" else END_MS + 60 * M)
        assert docs[3]["_id"] in by_id  # the group's kept copy
        assert {d["_id"] for d in left} == {target["_id"], docs[1]["_id"], docs[3]["_id"]} | {
            docs[5]["_id"]
        }
        archived = await asyncio.wait_for(
            handle.db["duplicate_archive"].distinct("document._id"), WAIT
        )
        assert sorted(archived) == sorted([docs[0]["_id"], docs[4]["_id"]])
        (entry,) = await asyncio.wait_for(
            handle.db["audit_log"].find({"action": "remove_duplicates"}).to_list(None), WAIT
        )
        assert (entry["groups"], entry["skipped"], entry["deleted"]) == (SLOTS, 1, SLOTS - 1)
        assert [to_ms(t) for t in entry["skipped_timestamps"]] == [_slot(1)]
