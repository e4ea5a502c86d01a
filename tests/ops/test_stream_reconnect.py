"""auditclient's watch_health survives a real server's SIGTERM: the stream ends
UNAVAILABLE "shutting down", the client reconnects, and scores flow again from
the replica restarted on the same port."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from auditclient import AuditClient, ClientOptions
from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect
from tests.cluster.harness import ReplicaProcess
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

TIMEOUT = 15.0
DATABASE = "reconnect"
END_MS = 1_767_225_600_000


def start(db: SecantusDB, tmp_path: Path, name: str, port: int | None = None) -> ReplicaProcess:
    """A standalone replica (optionally on a given port), started."""
    env = {"ENABLE_LEADER_ELECTION": "false", "AUDIT_SYMBOLS": "ETHUSDT", "AUDIT_TIMEFRAMES": "1m"}
    if port is not None:
        env["GRPC_PORT"] = str(port)
    replica = ReplicaProcess(name, db.uri, DATABASE, tmp_path, **env)
    if port is not None:
        replica.port, replica.target = port, f"127.0.0.1:{port}"
    replica.start()
    return replica


async def audit(replica: ReplicaProcess) -> None:
    """A live RunAudit of ETHUSDT 1m, retried until the replica is ready."""

    async def done() -> bool:
        try:
            await replica.stub.RunAudit(pb.RunAuditRequest(symbols=["ETHUSDT"]), timeout=5)
        except Exception:
            return False
        return True

    await eventually(done, within=TIMEOUT, interval=0.2)


class TestWatchHealthAcrossRestart:
    """A server shutdown is a reconnect for the Python client, not the end of the watch."""

    async def test_reconnects_after_sigterm(self, tmp_path: Path) -> None:
        """Scores from before SIGTERM and from the restarted replica both reach one watch."""
        db = SecantusDB(storage=":memory:")
        await asyncio.to_thread(db.start)
        first = second = None
        try:
            handle = connect(db.uri, DATABASE, 5000)
            try:
                docs, _ = demo_series("ETHUSDT", "1m", END_MS, 240)
                await asyncio.wait_for(handle.db["candles_ETHUSDT_1m"].insert_many(docs), TIMEOUT)
            finally:
                await handle.close()
            first = await asyncio.to_thread(start, db, tmp_path, "first")
            await audit(first)
            options = ClientOptions(
                target=first.target, reconnect_initial_backoff=0.1, reconnect_max_backoff=0.5
            )
            async with AuditClient(options=options) as client:
                watch = client.watch_health(["ETHUSDT"], ["1m"])
                before = await asyncio.wait_for(anext(watch), TIMEOUT)
                first.signal(signal.SIGTERM)
                assert await asyncio.to_thread(first.wait_exit, TIMEOUT) == 0
                second = await asyncio.to_thread(start, db, tmp_path, "second", first.port)
                await audit(second)
                after = await asyncio.wait_for(anext(watch), TIMEOUT)
                await watch.aclose()  # type: ignore[attr-defined]
            assert after.symbol == "ETHUSDT"
            assert after.computed_at.ToMilliseconds() > before.computed_at.ToMilliseconds()
        finally:
            for replica in (first, second):
                if replica is not None:
                    await replica.close()
            await asyncio.to_thread(db.close)
