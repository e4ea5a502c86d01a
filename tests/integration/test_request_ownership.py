"""Work started for a request_id belongs to the service: a caller that gives up cancels
nothing, and every waiter gets the result (issue 10 item 5, second bullet)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import CYCLES, connect
from tests.support import SecantusDB, eventually, replica_env

pytestmark = pytest.mark.slow

END_MS = 1_767_225_600_000
SLOTS = 240
TIMEOUT = 30.0
DATABASE = "ownership"


def stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    return bool(states) and all(state == "T" for state in states)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    """A SecantusDB of this test's own (it gets SIGSTOPped), with one series seeded."""
    server = SecantusDB(storage=str(tmp_path / "db"))
    await asyncio.to_thread(server.start)
    handle = connect(server.uri, DATABASE, 5000)
    try:
        docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
        await asyncio.wait_for(handle.db["candles_BTCUSDT_1m"].insert_many(docs), TIMEOUT)
    finally:
        await handle.close()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    await asyncio.to_thread(server.close)


class TestImpatientCaller:
    """One caller giving up on a request_id does not cancel the work the others wait for."""

    async def test_waiters_get_the_result(
        self,
        db: SecantusDB,
        start_replica: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The first of six same-request_id calls is cancelled mid-work; the five others get OK."""
        replica = await start_replica(Settings.from_env(replica_env(db.uri, DATABASE)))
        service = replica.app.service
        joined = 0
        ledger = service._requests
        once = ledger.once

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal joined
            joined += 1
            return await once(*args, **kwargs)

        # A probe, not a fake: it counts callers that reached the request_id ledger.
        monkeypatch.setattr(ledger, "once", counting)
        request = pb.RunAuditRequest(
            symbols=["BTCUSDT"],
            timeframes=["1m"],
            request_id="impatient",
            start_time=Timestamp(seconds=(END_MS - SLOTS * 60_000) // 1000),
            end_time=Timestamp(seconds=END_MS // 1000),
        )
        assert db.proc is not None
        pid = db.proc.pid
        db.proc.send_signal(signal.SIGSTOP)
        try:

            async def frozen() -> bool:
                return stopped(pid)

            await eventually(frozen, within=TIMEOUT)
            first = replica.stub.RunAudit(request, timeout=TIMEOUT)
            first_done = asyncio.ensure_future(first)

            async def started() -> bool:
                return joined == 1

            await eventually(started, within=TIMEOUT)
            patient = [
                asyncio.ensure_future(replica.stub.RunAudit(request, timeout=60)) for _ in range(5)
            ]

            async def all_waiting() -> bool:
                return joined == 6

            await eventually(all_waiting, within=TIMEOUT)
            first.cancel()  # the impatient caller gives up while the work is held up
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(first_done, TIMEOUT)
        finally:
            db.proc.send_signal(signal.SIGCONT)

        replies = await asyncio.wait_for(
            asyncio.gather(*patient, return_exceptions=True), timeout=TIMEOUT * 2
        )
        errors = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
        assert not errors, [(e.code(), e.details()) for e in errors]
        assert len({r.cycle.cycle_id for r in replies}) == 1
        handle = connect(db.uri, DATABASE, 5000)
        try:
            assert await asyncio.wait_for(handle.db[CYCLES].count_documents({}), TIMEOUT) == 1
        finally:
            await handle.close()
