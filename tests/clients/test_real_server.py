"""The client library against a real auditsvc: an in-process replica on a real SecantusDB,
and `python -m auditsvc serve` processes that are killed and restarted on the same port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditclient import (
    AuditClient,
    BlockingAuditClient,
    ClientOptions,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from auditpb.v1 import audit_pb2
from auditsvc.devtools.demo import Expected, demo_series
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import CYCLES, Database, connect
from tests.cluster.harness import ReplicaProcess
from tests.support import SecantusDB, eventually, free_port

from .conftest import fast_options

T = TypeVar("T")

END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOTS = 1440
START = datetime.fromtimestamp((END_MS - SLOTS * 60_000) / 1000, UTC)
END = datetime.fromtimestamp(END_MS / 1000, UTC)
TIMEOUT = 20.0  # bound of every await that is not a client call with its own deadline


async def bounded(awaitable: Awaitable[T], within: float = TIMEOUT) -> T:
    """Await ``awaitable`` under a deadline."""
    async with asyncio.timeout(within):
        return await awaitable


async def seed(settings: Settings, symbol: str = "BTCUSDT") -> tuple[list[Any], Expected]:
    """Insert the demo 1m series of ``symbol``; return its documents and what an audit finds."""
    docs, expected = demo_series(symbol, "1m", END_MS, SLOTS)
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        await bounded(database.db[settings.audit.collection_for(symbol, "1m")].insert_many(docs))
    finally:
        await database.close()
    return docs, expected


def gap_keys(expected: Expected, symbol: str) -> list[tuple[str, str, int, int]]:
    """The (symbol, timeframe, start seconds, missing) of each seeded gap, in order."""
    return [(symbol, "1m", start_ms // 1000, missing) for start_ms, missing in expected.gaps]


def seconds(score: audit_pb2.HealthScore) -> tuple[int, int]:
    """A score's computed_at as a comparable (seconds, nanos) pair."""
    return (score.computed_at.seconds, score.computed_at.nanos)


def real_options(target: str, **changes: object) -> ClientOptions:
    """Fast test options with a deadline long enough for a 1440-candle audit."""
    values: dict[str, object] = {"timeout": TIMEOUT}
    values.update(changes)
    return fast_options(target, **values)


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    """A handle on the test's database, for checking what the server stored."""
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    yield handle
    await handle.close()


@pytest.fixture
async def spawn(
    mongo: SecantusDB, db_name: str, tmp_path: Path
) -> AsyncIterator[Callable[..., ReplicaProcess]]:
    """Start `python -m auditsvc serve` processes (standalone) on the test's database."""
    started: list[ReplicaProcess] = []

    def start(name: str, **env: str) -> ReplicaProcess:
        settings = {"ENABLE_LEADER_ELECTION": "false", **env}
        replica = ReplicaProcess(name, mongo.uri, db_name, tmp_path, **settings)
        started.append(replica)
        replica.start()
        return replica

    yield start
    for replica in started:
        await bounded(replica.close())


def log_of(replica: ReplicaProcess) -> str:
    """The tail of a replica process's log, for assertion messages."""
    return replica.log_path.read_text(errors="replace")[-4000:]


async def restart_after(replica: ReplicaProcess, delay: float) -> float:
    """Start ``replica`` again on its port after ``delay`` seconds; return when it listened."""
    await asyncio.sleep(delay)
    await bounded(asyncio.to_thread(replica.start), 40)
    return time.monotonic()


async def auditctl(*args: str) -> tuple[int, str, str]:
    """Run ``python -m auditclient.cli ARGS``; return (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUDITSVC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditclient.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        out, err = await bounded(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await bounded(process.wait(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class TestEveryRpc:
    """Each AuditClient method against an in-process replica over seeded data."""

    async def test_get_leader_and_status(self, make_settings, start_replica) -> None:
        """A standalone replica names itself leader; status reports it and the last cycle."""
        replica = await start_replica(make_settings())
        async with AuditClient(options=real_options(replica.target)) as client:
            leader = await client.get_leader()
            assert (leader.leader_id, leader.is_self, leader.epoch) == ("test-1", True, 0)
            status = await client.get_status()
            assert status.replica_id == "test-1"
            assert status.role == audit_pb2.ROLE_STANDALONE
            assert status.database_reachable
            assert status.series_count == 4
            assert not status.HasField("last_cycle")
            ran = await client.run_audit(["BTCUSDT"], ["1m"], START, END)
            status = await client.get_status()
            assert status.last_cycle.cycle_id == ran.cycle.cycle_id

    async def test_run_audit_reports_exact_counts(self, make_settings, start_replica) -> None:
        """An explicit window over the seeded series reports its gaps and duplicates exactly."""
        settings = make_settings()
        _, expected = await seed(settings)
        replica = await start_replica(settings)
        async with AuditClient(options=real_options(replica.target)) as client:
            reply = await client.run_audit(["BTCUSDT"], ["1m"], START, END)
        (report,) = reply.cycle.series
        missing = sum(n for _, n in expected.gaps)
        assert (report.symbol, report.timeframe) == ("BTCUSDT", "1m")
        assert report.window_start.ToDatetime(tzinfo=UTC) == START
        assert report.window_end.ToDatetime(tzinfo=UTC) == END
        assert report.expected_candles == SLOTS
        assert report.missing_candles == missing == 93
        assert report.present_candles == SLOTS - missing
        assert (report.gap_count, report.duplicate_groups, report.surplus_documents) == (2, 3, 3)
        assert report.misaligned_candles == 0
        assert report.health.completeness == pytest.approx(100 * (SLOTS - missing) / SLOTS)
        assert report.health.cycle_id == reply.cycle.cycle_id
        assert reply.cycle.served_by == "test-1"

    async def test_list_gaps_walks_small_pages(
        self, make_settings, start_replica, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Small pages yield every gap exactly once, ordered by symbol, timeframe and start."""
        settings = make_settings()
        _, expected = await seed(settings)
        await seed(settings, "ETHUSDT")
        replica = await start_replica(settings)
        want = gap_keys(expected, "BTCUSDT") + gap_keys(expected, "ETHUSDT")
        async with AuditClient(options=real_options(replica.target)) as client:
            await client.run_audit([], ["1m"], START, END)
            calls: list[audit_pb2.ListGapsRequest] = []
            original = client.stub.ListGaps

            def counting(request: audit_pb2.ListGapsRequest, **kwargs: Any) -> Any:
                calls.append(audit_pb2.ListGapsRequest.FromString(request.SerializeToString()))
                return original(request, **kwargs)

            monkeypatch.setattr(client.stub, "ListGaps", counting)
            for page_size, pages in ((1, 4), (3, 2)):
                calls.clear()
                got = [
                    (g.symbol, g.timeframe, g.start_time.seconds, g.missing_candles)
                    async for g in client.list_gaps(page_size=page_size)
                ]
                assert got == want
                assert len(calls) == pages
                assert calls[0].page_token == ""
                assert len({c.page_token for c in calls}) == pages
            high = [g async for g in client.list_gaps("ETHUSDT", "1m", min_missing_candles=10)]
            assert [(g.missing_candles, g.severity) for g in high] == [
                (90, audit_pb2.SEVERITY_HIGH)
            ]

    async def test_resolve_duplicates_dry_run_then_removal(
        self, make_settings, start_replica, database: Database
    ) -> None:
        """A dry run removes nothing; a real run with removal enabled removes the surplus."""
        settings = make_settings(ENABLE_DUPLICATE_REMOVAL="true")
        docs, _ = await seed(settings)
        candles = database.db[settings.audit.collection_for("BTCUSDT", "1m")]
        replica = await start_replica(settings)
        async with AuditClient(options=real_options(replica.target)) as client:
            dry = await client.resolve_duplicates("BTCUSDT", "1m", START, END)
            assert dry.dry_run
            assert (dry.duplicate_groups, dry.surplus_documents, dry.documents_removed) == (3, 3, 0)
            assert await bounded(candles.count_documents({})) == len(docs)
            real = await client.resolve_duplicates(
                "BTCUSDT",
                "1m",
                START,
                END,
                strategy="keep_newest",
                dry_run=False,
                request_id="dedupe-1",
            )
        assert not real.dry_run and real.removal_enabled
        assert (real.documents_removed, real.documents_archived) == (3, 3)
        assert real.strategy == audit_pb2.STRATEGY_KEEP_NEWEST
        assert await bounded(candles.count_documents({})) == len(docs) - 3

    async def test_watch_health_snapshot_then_new_score(self, make_settings, start_replica) -> None:
        """The stream first yields the current score, then the one of the next audit."""
        # No live tail: its scores would race the audits' on the stream.
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        async with AuditClient(options=real_options(replica.target)) as client:
            # The default window: a range ending before the live edge is a report,
            # which never reaches the stream.
            first = await client.run_audit(["BTCUSDT"], ["1m"])
            stream = client.watch_health(["BTCUSDT"], ["1m"])
            try:
                current = await bounded(anext(stream))
                assert (current.symbol, current.timeframe) == ("BTCUSDT", "1m")
                assert current.cycle_id == first.cycle.cycle_id
                assert current.quality == pytest.approx(first.cycle.series[0].health.quality)
                second = await client.run_audit(["BTCUSDT"], ["1m"])
                fresh = await bounded(anext(stream))
            finally:
                await bounded(stream.aclose())
        assert fresh.cycle_id == second.cycle.cycle_id != first.cycle.cycle_id
        assert seconds(fresh) > seconds(current)


class TestBlockingClient:
    """BlockingAuditClient against the in-process replica, run in a worker thread."""

    async def test_get_status_and_list_gaps(self, make_settings, start_replica) -> None:
        """get_status and the list_gaps generator answer from the real server."""
        settings = make_settings()
        _, expected = await seed(settings)
        replica = await start_replica(settings)
        async with AuditClient(options=real_options(replica.target)) as client:
            ran = await client.run_audit(["BTCUSDT"], ["1m"], START, END)

        def blocking() -> tuple[audit_pb2.GetStatusResponse, list[audit_pb2.Gap]]:
            with BlockingAuditClient(options=real_options(replica.target)) as sync_client:
                return sync_client.get_status(), list(sync_client.list_gaps(page_size=1))

        status, gaps = await bounded(asyncio.to_thread(blocking))
        assert status.replica_id == "test-1"
        assert status.last_cycle.cycle_id == ran.cycle.cycle_id
        assert [
            (g.symbol, g.timeframe, g.start_time.seconds, g.missing_candles) for g in gaps
        ] == gap_keys(expected, "BTCUSDT")


class TestServerErrors:
    """The real server's statuses become the client's typed exceptions."""

    async def test_unknown_timeframe_is_invalid_argument(
        self, make_settings, start_replica
    ) -> None:
        """An unknown timeframe name raises InvalidArgument."""
        replica = await start_replica(make_settings())
        async with AuditClient(options=real_options(replica.target)) as client:
            with pytest.raises(InvalidArgument) as err:
                await client.run_audit(["BTCUSDT"], ["7x"])
        assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "7x" in err.value.details

    async def test_unconfigured_symbol_is_not_found(self, make_settings, start_replica) -> None:
        """A symbol outside AUDIT_SYMBOLS raises NotFound, for audits and for dedupe."""
        replica = await start_replica(make_settings())
        async with AuditClient(options=real_options(replica.target)) as client:
            with pytest.raises(NotFound) as err:
                await client.run_audit(["DOGE"])
            assert err.value.code is grpc.StatusCode.NOT_FOUND
            assert "DOGE" in err.value.details
            with pytest.raises(NotFound):
                await client.resolve_duplicates("DOGE", "1m")

    async def test_reused_request_id_with_other_body_is_failed_precondition(
        self, make_settings, start_replica
    ) -> None:
        """A request_id reused with a different body raises FailedPrecondition."""
        settings = make_settings()
        await seed(settings)
        replica = await start_replica(settings)
        async with AuditClient(options=real_options(replica.target)) as client:
            await client.run_audit(["BTCUSDT"], ["1m"], START, END, request_id="job-1")
            with pytest.raises(FailedPrecondition) as err:
                await client.run_audit(["ETHUSDT"], ["1m"], START, END, request_id="job-1")
        assert err.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "request_id" in err.value.details


class TestIdempotentRequestId:
    """A repeated request_id is the same request: one cycle, one stored document."""

    async def test_same_request_id_same_cycle(
        self, make_settings, start_replica, database: Database
    ) -> None:
        """Two identical run_audit calls with one request_id return one stored cycle."""
        settings = make_settings()
        await seed(settings)
        replica = await start_replica(settings)
        async with AuditClient(options=real_options(replica.target)) as client:
            first = await client.run_audit(["BTCUSDT"], ["1m"], START, END, request_id="nightly-1")
            second = await client.run_audit(["BTCUSDT"], ["1m"], START, END, request_id="nightly-1")
        assert first.cycle.cycle_id == second.cycle.cycle_id
        assert second.cycle.series[0].missing_candles == first.cycle.series[0].missing_candles
        cycles = database.db[CYCLES]
        assert await bounded(cycles.count_documents({"_id": first.cycle.cycle_id})) == 1
        assert await bounded(cycles.count_documents({})) == 1


@pytest.mark.slow
class TestRetriesAcrossRestart:
    """Reads bridge a replica restart on the same port; unkeyed mutations are not retried."""

    async def test_get_status_bridges_kill_and_restart(self, spawn, database: Database) -> None:
        """get_status issued while the replica is dead succeeds once it is back on its port."""
        replica = spawn("first")
        # gRPC caps maxAttempts at 5, so widen the backoff instead: ~0.5+1+2+3 = 6.5 s
        # (jittered +-20%). The default 0.1+0.2+0.4+0.8 = 1.5 s only just covers the 0.5 s
        # outage, the process start and the subchannel's 1 s reconnect backoff when idle.
        options = real_options(
            replica.target,
            max_attempts=5,
            retry_initial_backoff=0.5,
            retry_max_backoff=3.0,
            timeout=10.0,
        )
        async with AuditClient(options=options) as client:
            assert (await client.get_status()).replica_id == "first"
            replica.signal(signal.SIGKILL)
            assert await bounded(asyncio.to_thread(replica.wait_exit)) == -signal.SIGKILL

            began = time.monotonic()
            with pytest.raises(Unavailable):
                await client.run_audit(["BTCUSDT"], ["1m"], START, END)
            assert time.monotonic() - began < 2.0, "an unkeyed run_audit was retried"
            async with AuditClient(options=real_options(replica.target, max_attempts=1)) as once:
                with pytest.raises(Unavailable):
                    await once.get_status()

            replica.env["REPLICA_ID"] = "second"
            began = time.monotonic()
            restart = asyncio.create_task(restart_after(replica, 0.5))
            try:
                status = await client.get_status(call_timeout=10.0)
                answered = time.monotonic()
            finally:
                listening = await bounded(restart, 45)
            assert status.replica_id == "second", log_of(replica)
            # The read was issued during the outage and bridged it: it took at least the delay.
            assert answered - began >= 0.5 and listening - began >= 0.5
            assert client.options.target == replica.target == f"127.0.0.1:{replica.port}"
            assert (await client.get_leader()).leader_id == "second"
        assert await bounded(database.db[CYCLES].count_documents({})) == 0


@pytest.mark.slow
class TestWatchAcrossRestart:
    """watch_health follows a replica through SIGTERM and a restart on the same port."""

    async def test_new_score_after_restart_and_no_older_one(self, spawn, make_settings) -> None:
        """After the restart the stream yields the new score, never a replayed or older one."""
        # No live tail: its scores would interleave with the audits'.
        replica = spawn("watched", LIVE_MODE="off")
        seen: list[audit_pb2.HealthScore] = []
        await eventually(lambda: _serving(replica.target), within=TIMEOUT)
        async with AuditClient(options=real_options(replica.target)) as client:
            # Default windows: only an audit reaching the live edge is streamed.
            first = await client.run_audit(["BTCUSDT"], ["1m"])

            async def consume() -> None:
                async for score in client.watch_health(["BTCUSDT"], ["1m"]):
                    seen.append(score)

            consumer = asyncio.create_task(consume())
            try:
                await eventually(lambda: _at_least(seen, 1), within=TIMEOUT)
                assert seen[0].cycle_id == first.cycle.cycle_id

                replica.signal(signal.SIGTERM)
                assert await bounded(asyncio.to_thread(replica.wait_exit)) == 0, log_of(replica)
                await bounded(asyncio.to_thread(replica.start), 40)
                # The channel (its subchannel is shared by every channel with the same options)
                # may still be backing off from refused connects: wait until it reaches the
                # new process before an unkeyed run_audit, which is sent only once.
                await eventually(lambda: _reachable(client), within=TIMEOUT)
                await eventually(lambda: _serving(replica.target), within=TIMEOUT)
                second = await client.run_audit(["BTCUSDT"], ["1m"])
                await eventually(lambda: _at_least(seen, 2), within=TIMEOUT)
                # The stream stays open across the reconnect: cancel is its only way out.
                assert not consumer.done()
            finally:
                consumer.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await bounded(consumer)
        assert [s.cycle_id for s in seen] == [first.cycle.cycle_id, second.cycle.cycle_id]
        assert seconds(seen[1]) > seconds(seen[0])
        assert {(s.symbol, s.timeframe) for s in seen} == {("BTCUSDT", "1m")}


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def _reachable(client: AuditClient) -> bool:
    try:
        await client.get_status(call_timeout=2.0)
    except Unavailable:
        return False
    return True


async def _serving(target: str) -> bool:
    """The replica's readiness: AuditService SERVING (its collections exist, RunAudit runs)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service="auditpb.v1.AuditService"), timeout=2.0
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class TestAuditctl:
    """auditctl as a subprocess against the real server."""

    async def test_status_gaps_and_errors(self, make_settings, start_replica) -> None:
        """status --json parses, gaps lists the seeded gaps, DOGE exits 2."""
        settings = make_settings()
        _, expected = await seed(settings)
        replica = await start_replica(settings)
        async with AuditClient(options=real_options(replica.target)) as client:
            ran = await client.run_audit(["BTCUSDT"], ["1m"], START, END)

        code, out, err = await auditctl("--target", replica.target, "status", "--json")
        assert (code, err) == (0, "")
        data = json.loads(out)
        assert data["replica_id"] == "test-1"
        assert data["role"] == "ROLE_STANDALONE"
        assert data["last_cycle"]["cycle_id"] == ran.cycle.cycle_id

        code, out, err = await auditctl("gaps", "--target", replica.target, "--symbol", "BTCUSDT")
        assert (code, err) == (0, "")
        for start_ms, missing in expected.gaps:
            stamp = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            (row,) = [line for line in out.splitlines() if stamp in line]
            assert row.split()[:2] == ["BTCUSDT", "1m"]
            assert str(missing) in row.split()
        assert out.rstrip().endswith("2 gap(s)")

        code, out, err = await auditctl("run", "--target", replica.target, "--symbol", "DOGE")
        assert code == 2
        assert out == ""
        assert err.startswith("auditctl: error: NOT_FOUND") and err.count("\n") == 1

    async def test_dead_port_exits_3(self) -> None:
        """Nothing listening on the target: exit 3 with one line naming the target."""
        target = f"127.0.0.1:{free_port()}"
        code, out, err = await auditctl("--target", target, "--timeout", "3", "status")
        assert (code, out) == (3, "")
        assert target in err and err.count("\n") == 1
