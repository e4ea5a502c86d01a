"""SIGTERM with the database stalled (SIGSTOPped): the process still exits within
SHUTDOWN_GRACE plus a small margin (issue 11 item 14)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auditpb.v1 import audit_pb2 as pb
from tests.cluster.harness import ReplicaProcess
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

GRACE = 3.0
# Shutdown steps past the grace get at least 0.5 s each (app._STEP_FLOOR), plus
# interpreter exit: a generous margin, far below the 30 s socket timeout it guards.
EXIT_MARGIN = 5.0
TIMEOUT = 15.0


def stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    return bool(states) and all(state == "T" for state in states)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    await asyncio.to_thread(server.start)
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    await asyncio.to_thread(server.close)


class TestStalledDatabaseShutdown:
    """Every shutdown step is bounded, whatever the database does."""

    @pytest.mark.parametrize("election", ["true", "false"])
    async def test_sigterm_exits_within_grace(
        self, db: SecantusDB, tmp_path: Path, election: str
    ) -> None:
        """A leader whose database is SIGSTOPped exits 0 within grace + margin of SIGTERM."""
        replica = ReplicaProcess(
            "stalled",
            db.uri,
            "stalled",
            tmp_path,
            ENABLE_LEADER_ELECTION=election,
            ENABLE_AUDITOR="true",
            AUDIT_STARTUP_DELAY="0",
            AUDIT_SYMBOLS="BTCUSDT",
            AUDIT_TIMEFRAMES="1m",
            SHUTDOWN_GRACE=str(GRACE),
        )
        await asyncio.to_thread(replica.start)
        try:

            async def audited() -> bool:
                status = await replica.status()
                return status.database_reachable and status.last_cycle.cycle_id != ""

            await eventually(audited, within=TIMEOUT, interval=0.1)
            # A call in flight on the stalled database, as a client would leave one.
            pending = asyncio.ensure_future(
                replica.stub.ListGaps(pb.ListGapsRequest(page_size=10), timeout=60)
            )
            assert db.proc is not None
            pid = db.proc.pid
            db.proc.send_signal(signal.SIGSTOP)

            async def frozen() -> bool:
                return stopped(pid)

            await eventually(frozen, within=TIMEOUT)
            began = time.monotonic()
            replica.signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(replica.wait_exit, GRACE + EXIT_MARGIN + TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"no exit after SIGTERM; log:\n{replica.log_path.read_text()[-3000:]}")
            took = time.monotonic() - began
            pending.cancel()
            log = replica.log_path.read_text()
            assert code == 0, log[-3000:]
            assert took < GRACE + EXIT_MARGIN, f"exit took {took:.1f}s; log:\n{log[-3000:]}"
        finally:
            if db.proc is not None:
                db.proc.send_signal(signal.SIGCONT)
            await replica.close()
