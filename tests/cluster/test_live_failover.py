"""Live series state across a leader crash or freeze, with real replica processes and
a real SecantusDB: a series whose feed stops just before the leader is SIGKILLed
still reaches a follower's StreamHealthScores as LATE, stored by the new leader
under its own epoch; a leader frozen (SIGSTOP) while it still holds its lease turns
every follower's answer UNKNOWN, and its resumption turns it back."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.storage.mongo.database import SERIES, connect
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.integration.live_feed import candle
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

SEC = 1000
HEARTBEAT, TIMEOUT = 0.3, 1.2
MARGIN = 10.0  # generous: the machine is shared; the bound is on correctness, not speed
COLLECTION = "klines_1s"


class Feeder:
    """Inserts each fed symbol's forming 1s candle, as a live exchange feed would."""

    def __init__(self, coll: Any, symbols: set[str]) -> None:
        self.coll = coll
        self.symbols = symbols
        self.newest: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def stop(self, symbol: str) -> int:
        """Stops feeding ``symbol``; returns the open time of its last inserted candle."""
        async with self._lock:
            self.symbols.discard(symbol)
            return self.newest[symbol]

    async def run(self) -> None:
        while True:
            now = int(time.time()) * SEC
            async with self._lock:
                for sym in self.symbols:
                    first = self.newest.get(sym, now - 30 * SEC)
                    docs = [candle(sym, t) for t in range(first + SEC, now + 1, SEC)]
                    if docs:
                        await self.coll.insert_many(docs)
                        self.newest[sym] = now
            await asyncio.sleep(0.1)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    server.start()
    yield server
    server.close()


async def _state(replica: ReplicaProcess, symbol: str) -> int | None:
    try:
        reply = await replica.stub.ListHealthScores(
            pb.ListHealthScoresRequest(symbols=[symbol]), timeout=5
        )
    except grpc.aio.AioRpcError:
        return None
    return reply.scores[0].state if reply.scores else None


@pytest.mark.parametrize("mode", ["poll", "change_stream"])
class TestLiveFailover:
    """The live tail moves with the lease: no LATE is lost to a leader crash."""

    async def test_late_reaches_follower_after_leader_sigkill(
        self, db: SecantusDB, tmp_path: Path, mode: str
    ) -> None:
        """Feed stops, leader SIGKILLed before LATE is due: a follower's stream still gets LATE."""
        database = f"lf_{int(time.time() * 1000)}"
        handle = connect(db.uri, database, 2000)
        coll = handle.db[COLLECTION]
        await coll.create_index([("symbol", 1), ("timestamp", 1)])
        feeder = Feeder(coll, {"BTCUSDT", "ETHUSDT"})
        feeding = asyncio.create_task(feeder.run())
        replicas = [
            ReplicaProcess(
                f"r{i + 1}",
                db.uri,
                database,
                tmp_path,
                AUDIT_SYMBOLS="BTCUSDT,ETHUSDT",
                AUDIT_TIMEFRAMES="1s",
                CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}",
                AUDIT_INGEST_GRACE="2",
                LIVE_MODE=mode,
                LIVE_POLL_INTERVAL="0.2",
            )
            for i in range(3)
        ]
        stream: Any = None
        try:
            for replica in replicas:
                replica.start()
            old = await one_leader(replicas, within=20)
            follower = next(r for r in replicas if r is not old)
            await eventually(
                lambda: _is(follower, "BTCUSDT", pb.SERIES_STATE_LIVE), within=TIMEOUT + MARGIN
            )
            old_epoch = (await old.leader()).epoch

            stream = follower.stub.StreamHealthScores(
                pb.StreamHealthScoresRequest(symbols=["BTCUSDT"]), timeout=120
            )
            stopped_at = await feeder.stop("BTCUSDT")
            # Kill before LATE is due (last close + grace is ~3 s away), so the old
            # leader cannot have stored it: only the new leader's tail can.
            old.signal(signal.SIGKILL)
            old.wait_exit(timeout=10)

            async def late_on_stream() -> Any:
                async for msg in stream:
                    if msg.score.state == pb.SERIES_STATE_LATE:
                        return msg.score
                raise AssertionError("stream ended")

            late = await asyncio.wait_for(late_on_stream(), TIMEOUT + HEARTBEAT + MARGIN)
            assert late.last_candle_open.ToMilliseconds() == stopped_at
            assert late.late_candles >= 1
            survivors = [r for r in replicas if r is not old]
            new = await one_leader(survivors, within=TIMEOUT + MARGIN)
            new_epoch = (await new.leader()).epoch
            assert new_epoch > old_epoch
            stored = await handle.db[SERIES].find_one({"_id": "BTCUSDT|1s"})
            # The verdict's fields are the tail's, stamped with the new leader's epoch.
            assert stored is not None and stored["live_epoch"] == new_epoch
            # The series still fed stays LIVE under the new leader.
            assert await _state(follower, "ETHUSDT") == pb.SERIES_STATE_LIVE
        finally:
            if stream is not None:
                stream.cancel()
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
            for replica in replicas:
                await replica.close()
            await handle.close()


async def _is(replica: ReplicaProcess, symbol: str, state: int) -> bool:
    return await _state(replica, symbol) == state


class TestFrozenLeader:
    """A frozen leader keeps its lease for a while, but not its verdicts."""

    async def test_followers_serve_unknown_while_the_leader_is_stopped(
        self, db: SecantusDB, tmp_path: Path
    ) -> None:
        """SIGSTOP the leader for less than its lease: a follower's stream and reads go
        UNKNOWN (LIVE never outlives LIVE_STALE_AFTER), and LIVE again after SIGCONT,
        without a change of leader."""
        database = f"fz_{int(time.time() * 1000)}"
        handle = connect(db.uri, database, 2000)
        coll = handle.db[COLLECTION]
        await coll.create_index([("symbol", 1), ("timestamp", 1)])
        feeder = Feeder(coll, {"BTCUSDT"})
        feeding = asyncio.create_task(feeder.run())
        # A lease (20 s) longer than the freeze, the freeze longer than LIVE_STALE_AFTER.
        replicas = [
            ReplicaProcess(
                f"z{i + 1}",
                db.uri,
                database,
                tmp_path,
                AUDIT_SYMBOLS="BTCUSDT",
                AUDIT_TIMEFRAMES="1s",
                CANDLE_COLLECTION_TEMPLATE="klines_{timeframe}",
                AUDIT_INGEST_GRACE="2",
                LIVE_MODE="poll",
                LIVE_POLL_INTERVAL="0.2",
                LIVE_STALE_AFTER="2",
                LEADER_ELECTION_HEARTBEAT_INTERVAL="1",
                LEADER_ELECTION_TIMEOUT="20",
            )
            for i in range(2)
        ]
        stream: Any = None
        leader: ReplicaProcess | None = None
        try:
            for replica in replicas:
                replica.start()
            leader = await one_leader(replicas, within=40)
            follower = next(r for r in replicas if r is not leader)
            await eventually(lambda: _is(follower, "BTCUSDT", pb.SERIES_STATE_LIVE), MARGIN * 3)
            epoch = (await leader.leader()).epoch
            stream = follower.stub.StreamHealthScores(
                pb.StreamHealthScoresRequest(symbols=["BTCUSDT"]), timeout=120
            )

            async def on_stream(state: int) -> Any:
                async for msg in stream:
                    if msg.score.state == state:
                        return msg.score
                raise AssertionError("stream ended")

            leader.signal(signal.SIGSTOP)
            frozen_at = time.time()
            unknown = await asyncio.wait_for(on_stream(pb.SERIES_STATE_UNKNOWN), MARGIN)
            assert unknown.verdict_time.ToMilliseconds() <= frozen_at * 1000
            assert await _state(follower, "BTCUSDT") == pb.SERIES_STATE_UNKNOWN
            leader.signal(signal.SIGCONT)
            back = await asyncio.wait_for(on_stream(pb.SERIES_STATE_LIVE), MARGIN * 2)
            assert back.verdict_time.ToMilliseconds() > frozen_at * 1000
            assert (await follower.leader()).epoch == epoch  # the lease outlived the freeze
        finally:
            if leader is not None and leader.alive:
                leader.signal(signal.SIGCONT)
            if stream is not None:
                stream.cancel()
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
            for replica in replicas:
                await replica.close()
            await handle.close()
