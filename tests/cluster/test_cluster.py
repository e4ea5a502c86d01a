"""Election, forwarding and failover with real replica processes and a real
SecantusDB (heartbeat 0.3 s, lease 1.2 s)."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditclient import from_rpc_error
from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect
from tests.cluster.harness import ReplicaProcess, leaders, one_leader
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

END_MS = 1_767_225_600_000
SLOTS = 240
HEARTBEAT, TIMEOUT = 0.3, 1.2
MARGIN = 3.0  # generous: these machines are shared; the bound is on correctness


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


WINDOW = {"start_time": ts(END_MS - SLOTS * 60_000), "end_time": ts(END_MS)}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    server.start()
    yield server
    server.close()


@pytest.fixture
async def cluster(db: SecantusDB, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[ReplicaProcess] = []
    database = f"c_{int(time.time() * 1000)}"
    handle = connect(db.uri, database, 2000)
    docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
    await handle.db["candles_BTCUSDT_1m"].insert_many(docs)

    async def start(n: int = 3, **env: str) -> list[ReplicaProcess]:
        replicas = [
            ReplicaProcess(
                f"r{i + 1}",
                db.uri,
                database,
                tmp_path,
                AUDIT_SYMBOLS="BTCUSDT",
                AUDIT_TIMEFRAMES="1m",
                **env,
            )
            for i in range(n)
        ]
        for replica in replicas:
            replica.start()
        made.extend(replicas)
        return replicas

    start.database = handle  # type: ignore[attr-defined]
    yield start
    for replica in made:
        await replica.close()
    await handle.close()


class TestElection:
    """Exactly one replica leads and every replica agrees on which."""

    async def test_one_leader_everyone_agrees(self, cluster):
        """GetLeader is identical on all three and GetStatus roles are consistent."""
        replicas = await cluster(3)
        leader = await one_leader(replicas, within=10)
        answers = [await r.leader() for r in replicas]
        assert {a.leader_id for a in answers} == {leader.name}
        assert len({a.epoch for a in answers}) == 1 and answers[0].epoch >= 1
        assert [a.is_self for a in answers] == [r is leader for r in replicas]
        roles = sorted([(await r.status()).role for r in replicas])
        assert roles == sorted([pb.ROLE_LEADER, pb.ROLE_FOLLOWER, pb.ROLE_FOLLOWER])


class TestForwarding:
    """Followers forward mutating calls to the leader, exactly one hop."""

    async def test_follower_forwards_to_leader(self, cluster):
        """RunAudit and ResolveDuplicates sent to a follower are served by the leader."""
        replicas = await cluster(3, ENABLE_DUPLICATE_REMOVAL="true")
        leader = await one_leader(replicas, within=10)
        follower = next(r for r in replicas if r is not leader)
        await eventually(lambda: _knows_leader(follower, leader), within=5)
        reply = await follower.stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=10)
        assert reply.cycle.served_by == leader.name
        assert reply.cycle.epoch == (await leader.leader()).epoch
        dedupe = await follower.stub.ResolveDuplicates(
            pb.ResolveDuplicatesRequest(
                symbol="BTCUSDT", timeframe="1m", request_id="fw-1", **WINDOW
            ),
            timeout=10,
        )
        assert dedupe.served_by == leader.name and dedupe.documents_removed == 3
        archived = await cluster.database.db["duplicate_archive"].count_documents(
            {"request_id": "fw-1", "epoch": dedupe.epoch}
        )
        assert archived == 3

    async def test_no_second_hop(self, cluster):
        """A call already forwarded, arriving at a follower, is refused, not forwarded."""
        replicas = await cluster(3)
        leader = await one_leader(replicas, within=10)
        follower = next(r for r in replicas if r is not leader)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await follower.stub.RunAudit(
                pb.RunAuditRequest(**WINDOW),
                timeout=5,
                metadata=(("x-audit-forwarded-by", "someone"),),
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not leader" in err.value.details()

    async def test_no_leader_is_unavailable(self, cluster, db):
        """With the database stopped, a mutating call gets UNAVAILABLE, never a second leader."""
        replicas = await cluster(2)
        leader = await one_leader(replicas, within=10)
        follower = next(r for r in replicas if r is not leader)
        # Its elector (not just a database read) must have seen the leader before the outage.
        await eventually(lambda: _status_names(follower, leader), within=5)
        db.stop()
        await eventually(lambda: _no_leader(replicas), within=TIMEOUT + MARGIN)
        for replica in replicas:

            async def refused(replica: Any = replica) -> bool:
                # A follower may still forward once to a peer whose term just lapsed
                # ("not leader ... no second hop"); the answer settles on "no leader".
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await replica.stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                return "no leader" in (caught.value.details() or "")

            await eventually(refused, within=TIMEOUT)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await replica.stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no leader" in err.value.details()
            # Every lease has lapsed: no leader is named, not even the last one seen.
            trailers = dict(err.value.trailing_metadata() or ())
            assert "x-audit-leader" not in trailers, trailers
            assert from_rpc_error(err.value).reason == "NO_LEADER"


class TestClockSkew:
    """Replicas whose local clocks are hours apart still elect exactly one leader."""

    async def test_skewed_clocks_one_leader_and_failover(self, cluster):
        """With offsets of -1 h, 0 and +1 h there is one leader, and a clean handover."""
        replicas = await cluster(3)
        for replica, offset in zip(replicas, (-3_600_000, 0, 3_600_000), strict=True):
            await replica.close()
            replica.env["AUDITSVC_CLOCK_OFFSET_MS"] = str(offset)
            replica.start()
        leader = await one_leader(replicas, within=10)
        answers = {(await r.leader()).leader_id for r in replicas}
        assert answers == {leader.name}
        leader.signal(signal.SIGTERM)
        survivors = [r for r in replicas if r is not leader]
        assert await one_leader(survivors, within=HEARTBEAT + MARGIN)


class TestFailover:
    """A new leader takes over after a crash, a graceful stop or a pause."""

    async def test_sigkill_new_leader_higher_epoch(self, cluster):
        """After SIGKILL a survivor leads with a higher epoch and serves RunAudit."""
        replicas = await cluster(3)
        old = await one_leader(replicas, within=10)
        old_epoch = (await old.leader()).epoch
        old.signal(signal.SIGKILL)
        began = time.monotonic()
        survivors = [r for r in replicas if r is not old]
        new = await one_leader(survivors, within=TIMEOUT + HEARTBEAT + MARGIN)
        reply = await new.stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=10)
        assert reply.cycle.served_by == new.name
        assert reply.cycle.epoch > old_epoch
        assert time.monotonic() - began < TIMEOUT + HEARTBEAT + MARGIN

    async def test_sigterm_hands_over_and_releases(self, cluster):
        """SIGTERM releases the lease: the handover is quick and the old process exits 0."""
        replicas = await cluster(3)
        old = await one_leader(replicas, within=10)
        old_epoch = (await old.leader()).epoch
        old.signal(signal.SIGTERM)
        survivors = [r for r in replicas if r is not old]
        new = await one_leader(survivors, within=HEARTBEAT + MARGIN)
        assert (await new.leader()).epoch == old_epoch + 1
        assert old.wait_exit() == 0
        log = old.log_path.read_text()
        order = [
            log.index(f'"event": "{e}"')
            for e in (
                "shutting down: readiness off",
                "shutting down: leadership released",
                "stopped",
            )
        ]
        assert order == sorted(order)

    async def test_paused_leader_is_fenced(self, cluster):
        """A leader paused past its lease writes nothing under its old epoch afterwards."""
        replicas = await cluster(
            2,
            ENABLE_AUDITOR="true",
            AUDIT_INTERVAL="0.2",
            AUDIT_STARTUP_DELAY="0",
            ENABLE_AUTO_BACKFILL="true",
            MIN_AUTO_BACKFILL_GAP="60",
        )
        old = await one_leader(replicas, within=10)
        old_epoch = (await old.leader()).epoch
        other = next(r for r in replicas if r is not old)
        old.signal(signal.SIGSTOP)
        await one_leader([other], within=TIMEOUT + HEARTBEAT + MARGIN)
        new_lease = await cluster.database.db["leader_election"].find_one({})
        assert new_lease["epoch"] > old_epoch
        old.signal(signal.SIGCONT)
        await eventually(lambda: _is_follower(old), within=TIMEOUT + MARGIN)
        await asyncio.sleep(0)  # the old leader had every chance to write by now
        since = new_lease["acquired_at"]
        db = cluster.database.db
        for name, field in (
            ("duplicate_archive", "removed_at"),
            ("backfill_requests", "created_at"),
            ("audit_log", "at"),
            ("audit_cycles", "finished_at"),
        ):
            stale = await db[name].count_documents({"epoch": old_epoch, field: {"$gt": since}})
            assert stale == 0, name
        # The new leader keeps auditing under its own epoch.
        await eventually(
            lambda: db["audit_cycles"].count_documents({"epoch": new_lease["epoch"]}), within=10
        )


async def _knows_leader(follower: ReplicaProcess, leader: ReplicaProcess) -> bool:
    return (await follower.leader()).leader_id == leader.name


async def _status_names(follower: ReplicaProcess, leader: ReplicaProcess) -> bool:
    return bool((await follower.status()).leader_id == leader.name)


async def _no_leader(replicas: list[ReplicaProcess]) -> bool:
    return not await leaders(replicas)


async def _is_follower(replica: ReplicaProcess) -> bool:
    return (await replica.status()).role == pb.ROLE_FOLLOWER


_ = dt
