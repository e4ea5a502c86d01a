"""SIGTERM on a real leader process: readiness off, then the lease released, then in-flight
RPCs drained and streams closed (health scores with UNAVAILABLE "shutting down", the
health Watch with OK), then exit 0 — in that order."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import LEASES, connect, to_ms
from auditsvc.transport.server import SERVICE_NAME
from tests.cluster.harness import ReplicaProcess
from tests.support import SecantusDB, eventually

pytestmark = pytest.mark.slow

GRACE = 3.0
TIMEOUT = 10.0
EXIT_MARGIN = 5.0
END_MS = 1_767_225_600_000
BIG = 20_000  # slots of BTCUSDT 1m: an audit that takes a moment
SMALL = 240  # slots of ETHUSDT 1m: a quick audit, so that a score exists
DATABASE = "shutdown"
HEALTH = health_pb2.HealthCheckResponse
ORDER = (
    "shutting down: readiness off",
    "shutting down: leadership released",
    "shutting down: RPCs drained",
    "stopped",
)


def window(slots: int) -> dict[str, Timestamp]:
    return {
        "start_time": Timestamp(seconds=(END_MS - slots * 60_000) // 1000),
        "end_time": Timestamp(seconds=END_MS // 1000),
    }


def events(replica: ReplicaProcess) -> list[dict[str, Any]]:
    """The JSON events in the replica's log (stdout and stderr share the file)."""
    lines = replica.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def said(replica: ReplicaProcess) -> list[str]:
    return [e["event"] for e in events(replica)]


def renewal_failures(replica: ReplicaProcess) -> int:
    return sum("lease acquire failed" in line for line in said(replica))


def stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    return bool(states) and all(state == "T" for state in states)


async def logged(replica: ReplicaProcess, event: str, count: int = 1) -> None:
    async def seen() -> bool:
        return said(replica).count(event) >= count

    await eventually(seen, within=TIMEOUT, interval=0.02)


async def outcome(call: Any, within: float) -> tuple[grpc.StatusCode, str]:
    """The status a unary call ends with."""
    try:
        await asyncio.wait_for(call, timeout=within)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def drain(call: Any, within: float) -> tuple[list[Any], grpc.StatusCode, str]:
    """Reads a server stream to its end; its messages and final status."""
    messages = []
    try:
        async with asyncio.timeout(within):
            while (message := await call.read()) is not grpc.aio.EOF:
                messages.append(message)
            return messages, await call.code(), await call.details()
    except grpc.aio.AioRpcError as exc:
        return messages, exc.code(), exc.details() or ""


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    await asyncio.to_thread(server.start)
    handle = connect(server.uri, DATABASE, 5000)
    try:
        for symbol, slots in (("BTCUSDT", BIG), ("ETHUSDT", SMALL)):
            docs, _ = demo_series(symbol, "1m", END_MS, slots)
            await asyncio.wait_for(handle.db[f"candles_{symbol}_1m"].insert_many(docs), TIMEOUT)
    finally:
        await handle.close()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    await asyncio.to_thread(server.close)


@pytest.fixture
async def leader(db: SecantusDB, tmp_path: Path) -> AsyncIterator[ReplicaProcess]:
    """A lone election-enabled replica with SHUTDOWN_GRACE=3 that has become leader."""
    replica = ReplicaProcess(
        "solo",
        db.uri,
        DATABASE,
        tmp_path,
        AUDIT_SYMBOLS="BTCUSDT,ETHUSDT",
        AUDIT_TIMEFRAMES="1m",
        SHUTDOWN_GRACE=str(GRACE),
    )
    await asyncio.to_thread(replica.start)
    try:

        async def leading() -> bool:
            status = await replica.status()
            return status.role == pb.ROLE_LEADER and status.database_reachable

        async def stably_leading() -> bool:
            # Leading for 2 s without a break: at heartbeat 0.3 s a renewal that
            # times out while the new leader takes office (its live tail's first
            # look) can cost it the first term for a moment, and these tests need
            # a leader that stays one.
            until = time.monotonic() + 2.0
            while time.monotonic() < until:
                if not await leading():
                    return False
                await asyncio.sleep(0.1)
            return True

        await eventually(stably_leading, within=30, interval=0.1)
        yield replica
    finally:
        await replica.close()


@pytest.fixture
async def channel(leader: ReplicaProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(leader.target) as chan:
        yield chan


async def open_score_stream(leader: ReplicaProcess, chan: grpc.aio.Channel) -> Any:
    """A StreamHealthScores call that has delivered its first score."""
    # The default window: only an audit reaching the live edge stores a score (a
    # historical range is a report, which never reaches the stream).
    await leader.stub.RunAudit(pb.RunAuditRequest(symbols=["ETHUSDT"]), timeout=TIMEOUT)
    stream = pb_grpc.AuditServiceStub(chan).StreamHealthScores(
        pb.StreamHealthScoresRequest(symbols=["ETHUSDT"]), timeout=60
    )
    first = await asyncio.wait_for(stream.read(), timeout=TIMEOUT)
    assert first.score.symbol == "ETHUSDT"
    return stream


async def open_watch(chan: grpc.aio.Channel) -> Any:
    """A readiness Watch that has reported SERVING."""
    health = health_pb2_grpc.HealthStub(chan)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=60)
    first = await asyncio.wait_for(watch.read(), timeout=TIMEOUT)
    assert first.status == HEALTH.SERVING
    return watch


async def sigterm(leader: ReplicaProcess) -> Callable[[], Any]:
    """Sends SIGTERM; returns an awaitable for (exit code, seconds from SIGTERM to exit)."""
    began = time.monotonic()
    leader.signal(signal.SIGTERM)

    async def exited() -> tuple[int, float]:
        code = await asyncio.to_thread(leader.wait_exit, GRACE + EXIT_MARGIN + TIMEOUT)
        return code, time.monotonic() - began

    return exited


class TestSigtermOrder:
    """A leader with a stream, a Watch and an audit in flight shuts down in the written order."""

    async def test_order_with_work_in_flight(
        self, db: SecantusDB, leader: ReplicaProcess, channel: grpc.aio.Channel
    ) -> None:
        """Watch sees NOT_SERVING while alive; lease released at its epoch; log order; exit 0."""
        epoch = (await leader.status()).epoch
        assert epoch >= 1
        stream = await open_score_stream(leader, channel)
        watch = await open_watch(channel)
        audit = asyncio.ensure_future(
            leader.stub.RunAudit(pb.RunAuditRequest(symbols=["BTCUSDT"], **window(BIG)), timeout=30)
        )
        await logged(leader, "audit cycle started", count=2)  # the big cycle is running
        exited = await sigterm(leader)

        change = await asyncio.wait_for(watch.read(), timeout=GRACE + TIMEOUT)
        alive_at_change = leader.alive
        audit_code, audit_details = await outcome(audit, within=GRACE + TIMEOUT)
        code, took = await exited()
        await drain(stream, within=TIMEOUT)
        await drain(watch, within=TIMEOUT)

        assert change.status == HEALTH.NOT_SERVING
        assert alive_at_change, "readiness went NOT_SERVING only as the process exited"
        # The cycle either finished first or was cancelled when the term ended, which the
        # client sees as UNAVAILABLE (retry on the new leader), never as an internal error.
        assert (audit_code == grpc.StatusCode.OK) or (
            audit_code == grpc.StatusCode.UNAVAILABLE and "ended" in audit_details
        ), (audit_code, audit_details)
        assert code == 0, leader.log_path.read_text()[-3000:]
        assert took < GRACE + EXIT_MARGIN, f"exit took {took:.1f}s with SHUTDOWN_GRACE={GRACE}"

        handle = connect(db.uri, DATABASE, 5000)
        try:
            lease = await asyncio.wait_for(
                handle.db[LEASES].find_one({"_id": "auditsvc"}), timeout=TIMEOUT
            )
        finally:
            await handle.close()
        assert lease is not None
        assert (lease["replica_id"], lease["epoch"], lease["released"]) == ("solo", epoch, True)
        assert to_ms(lease["expires_at"]) <= lease["now_ms"], lease

        log = said(leader)
        positions = [log.index(line) for line in ORDER]
        assert positions == sorted(positions), [log[i] for i in sorted(positions)]
        released = log.index("lease released")
        assert positions[0] < released < positions[1]
        assert log[-1] == "stopped"


class TestStreamsEnd:
    """Open streams are finished by the server, not cut: scores with UNAVAILABLE, Watch OK."""

    async def test_score_stream_ends_unavailable(
        self, leader: ReplicaProcess, channel: grpc.aio.Channel
    ) -> None:
        """StreamHealthScores open at SIGTERM ends UNAVAILABLE "shutting down"; no error logged."""
        stream = await open_score_stream(leader, channel)
        exited = await sigterm(leader)
        _, code, details = await drain(stream, within=GRACE + TIMEOUT)
        exit_code, _ = await exited()
        errors = [e for e in events(leader) if e["level"] in ("error", "critical")]
        # Generic clients (grpc-js...) read OK as "finished" and would not reconnect.
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details, errors)
        assert details == "server shutting down; reconnect"
        assert not errors, errors
        assert exit_code == 0

    async def test_health_watch_ends_ok(
        self, leader: ReplicaProcess, channel: grpc.aio.Channel
    ) -> None:
        """A readiness Watch open at SIGTERM gets NOT_SERVING, then ends with OK."""
        watch = await open_watch(channel)
        exited = await sigterm(leader)
        messages, code, details = await drain(watch, within=GRACE + TIMEOUT)
        exit_code, _ = await exited()
        assert [m.status for m in messages] == [HEALTH.NOT_SERVING]
        assert code == grpc.StatusCode.OK, (code, details)
        assert exit_code == 0


class TestDrain:
    """A call already in flight at SIGTERM completes within SHUTDOWN_GRACE."""

    async def test_inflight_read_completes(self, db: SecantusDB, leader: ReplicaProcess) -> None:
        """A ListGaps held up by a stalled database finishes OK after SIGTERM, before exit."""
        assert db.proc is not None
        pid = db.proc.pid
        failures = renewal_failures(leader)
        db.proc.send_signal(signal.SIGSTOP)
        try:

            async def frozen() -> bool:
                return stopped(pid)

            await eventually(frozen, within=TIMEOUT)
            read = asyncio.ensure_future(
                leader.stub.ListGaps(pb.ListGapsRequest(page_size=10), timeout=30)
            )

            async def renewal_stalled() -> bool:
                return renewal_failures(leader) > failures

            # A renewal sent after the read timed out on the same database, so the
            # read has surely reached the replica and is waiting on the database.
            await eventually(renewal_stalled, within=TIMEOUT)
            assert not read.done()
            exited = await sigterm(leader)
            await logged(leader, "shutting down: leadership released")
            assert not read.done()
        finally:
            db.proc.send_signal(signal.SIGCONT)
        code, details = await outcome(read, within=GRACE + TIMEOUT)
        exit_code, _ = await exited()
        assert code == grpc.StatusCode.OK, (code, details)
        assert exit_code == 0, leader.log_path.read_text()[-3000:]
        log = events(leader)
        assert [e["event"] for e in log if e["event"] in ORDER] == list(ORDER)
        at = {e["event"]: dt.datetime.fromisoformat(e["ts"]) for e in log}
        drained = at["shutting down: RPCs drained"] - at["shutting down: leadership released"]
        assert dt.timedelta(0) < drained < dt.timedelta(seconds=GRACE), drained
