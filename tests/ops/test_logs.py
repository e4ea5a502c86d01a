"""Logs of a real replica process: JSON lines on stdout tagged with replica_id, epoch and
cycle_id; LOG_LEVEL filters; the API token and the MongoDB password never appear."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools.demo import demo_series
from auditsvc.storage.mongo.database import connect
from tests.cluster.harness import ReplicaProcess
from tests.security.certs import make_certs
from tests.support import SecantusDB, eventually, wait_port

pytestmark = pytest.mark.slow

TOKEN = "tok-Kq7vXw93-ops-secret"
PASSWORD = "pw-Zr4m81-ops-secret"
USER = "auditor"
END_MS = 1_767_225_600_000
SLOTS = 240
TIMEOUT = 10.0
WINDOW = {
    "start_time": Timestamp(seconds=(END_MS - SLOTS * 60_000) // 1000),
    "end_time": Timestamp(seconds=END_MS // 1000),
}
BEARER = (("authorization", f"Bearer {TOKEN}"),)
LEVELS = ("debug", "info", "warning", "error", "critical")


class LoggedReplica(ReplicaProcess):
    """A replica process whose stdout and stderr go to separate files."""

    def __init__(self, name: str, uri: str, database: str, log_dir: Path, **env: str) -> None:
        super().__init__(
            name, uri, database, log_dir, AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m", **env
        )
        self.stdout = log_dir / f"{name}.stdout"
        self.stderr = log_dir / f"{name}.stderr"

    def start(self) -> None:
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditsvc", "serve"], env=self.env, stdout=out, stderr=err
            )
        wait_port(self.port, 30, self.proc)

    def lines(self) -> list[str]:
        return self.stdout.read_text().splitlines()

    def events(self) -> list[dict[str, Any]]:
        """Stdout parsed line by line; a line that is not one JSON object fails the test."""
        events = []
        for number, line in enumerate(self.lines(), 1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"stdout line {number} is not JSON: {line!r}")
            assert isinstance(event, dict), f"stdout line {number} is not an object: {line!r}"
            events.append(event)
        return events

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    """A SecantusDB with a user whose password is in the replica's MONGODB_URI."""
    server = SecantusDB(storage=str(tmp_path / "db"))
    await asyncio.to_thread(server.start)
    handle = connect(server.uri, "logs", 5000)
    try:
        await asyncio.wait_for(
            handle.client.admin.command("createUser", USER, pwd=PASSWORD, roles=["root"]),
            TIMEOUT,
        )
        docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
        await asyncio.wait_for(handle.db["candles_BTCUSDT_1m"].insert_many(docs), TIMEOUT)
    finally:
        await handle.close()
    yield server
    await asyncio.to_thread(server.close)


@pytest.fixture
async def replica_factory(db: SecantusDB, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[LoggedReplica] = []

    async def start(level: str) -> LoggedReplica:
        uri = f"mongodb://{USER}:{PASSWORD}@127.0.0.1:{db.port}/?authSource=admin"
        replica = LoggedReplica(
            f"logs-{level.lower()}", uri, "logs", tmp_path, LOG_LEVEL=level, AUDIT_API_TOKEN=TOKEN
        )
        made.append(replica)
        await asyncio.to_thread(replica.start)

        async def leading() -> bool:
            status = await replica.status()
            return status.role == pb.ROLE_LEADER and status.database_reachable

        await eventually(leading, within=15, interval=0.1)
        return replica

    yield start
    for replica in made:
        await replica.close()


async def exercise(replica: LoggedReplica) -> None:
    """One authorised RunAudit, one refused for a wrong token."""
    reply = await replica.stub.RunAudit(
        pb.RunAuditRequest(**WINDOW), metadata=BEARER, timeout=TIMEOUT
    )
    assert reply.cycle.cycle_id
    wrong = (("authorization", f"Bearer {PASSWORD}"),)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await replica.stub.RunAudit(pb.RunAuditRequest(), metadata=wrong, timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def terminate(replica: LoggedReplica) -> None:
    replica.signal(signal.SIGTERM)
    code = await asyncio.to_thread(replica.wait_exit, 20)
    assert code == 0, replica.output()[-3000:]


def assert_no_secrets(replica: LoggedReplica) -> None:
    output = replica.output()
    assert TOKEN not in output, "AUDIT_API_TOKEN leaked into the output"
    assert PASSWORD not in output, "the MONGODB_URI password leaked into the output"


class TestJsonLogs:
    """At INFO every stdout line is one JSON event carrying its context, without secrets."""

    async def test_lines_are_tagged_json(self, replica_factory: Any) -> None:
        """Every line has replica_id, cycle lines a cycle_id, election lines an epoch."""
        replica = await replica_factory("INFO")
        await exercise(replica)
        await terminate(replica)
        events = replica.events()
        assert len(events) >= 10, replica.lines()
        for event in events:
            assert event.get("replica_id") == replica.name, event
            assert event.get("level") in LEVELS, event
            assert event.get("event"), event
            assert event.get("ts"), event
        cycles = [e for e in events if "audit cycle" in e["event"]]
        assert {e["event"] for e in cycles} >= {"audit cycle started", "audit cycle finished"}
        for event in cycles:
            assert str(event.get("cycle_id", "")).startswith("c-"), event
        election = [e for e in events if e["logger"] == "auditsvc.leadership.elector"]
        assert any(e["event"] == "started leading" and e["epoch"] >= 1 for e in election)
        for event in election:
            assert isinstance(event.get("epoch"), int), event
        said = [e["event"] for e in events]
        assert said.index("shutting down: readiness off") < said.index("stopped")
        assert_no_secrets(replica)


class TestLogLevel:
    """LOG_LEVEL=WARNING keeps warnings and drops info lines."""

    async def test_warning_suppresses_info(self, db: SecantusDB, replica_factory: Any) -> None:
        """With WARNING, a database outage is logged but no info line (cycles, shutdown) is."""
        replica = await replica_factory("WARNING")
        await exercise(replica)
        await asyncio.to_thread(db.stop)

        async def outage_logged() -> bool:
            return any("database unreachable" in line for line in replica.lines())

        await eventually(outage_logged, within=20, interval=0.1)
        await terminate(replica)
        events = replica.events()
        for event in events:
            assert event["level"] in ("warning", "error", "critical"), event
            assert event.get("replica_id") == replica.name, event
        said = {e["event"] for e in events}
        assert "audit cycle finished" not in said
        assert "shutting down: readiness off" not in said
        assert_no_secrets(replica)


class TestGrpcCoreLogs:
    """grpc-core's own plain-text lines do not interleave with the JSON log."""

    async def test_failed_tls_handshake_keeps_every_line_json(
        self, db: SecantusDB, tmp_path: Path
    ) -> None:
        """After a plaintext client fails the TLS handshake, stdout and stderr hold only JSON."""
        certs = make_certs(tmp_path / "certs")
        uri = f"mongodb://{USER}:{PASSWORD}@127.0.0.1:{db.port}/?authSource=admin"
        replica = LoggedReplica(
            "logs-tls",
            uri,
            "logs",
            tmp_path,
            LOG_LEVEL="INFO",
            GRPC_TLS_CERT_FILE=str(certs.server_cert_file),
            GRPC_TLS_KEY_FILE=str(certs.server_key_file),
        )
        try:
            await asyncio.to_thread(replica.start)
            async with grpc.aio.insecure_channel(replica.target) as plain:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await pb_grpc.AuditServiceStub(plain).GetStatus(
                        pb.GetStatusRequest(), timeout=TIMEOUT
                    )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            creds = grpc.ssl_channel_credentials(root_certificates=certs.ca)
            async with grpc.aio.secure_channel(replica.target, creds) as secure:
                status = await pb_grpc.AuditServiceStub(secure).GetStatus(
                    pb.GetStatusRequest(), timeout=TIMEOUT
                )
            assert status.replica_id == "logs-tls"
            await terminate(replica)
        finally:
            await replica.close()
        assert replica.events(), replica.output()
        for number, line in enumerate(replica.stderr.read_text().splitlines(), 1):
            try:
                assert isinstance(json.loads(line), dict)
            except (json.JSONDecodeError, AssertionError):
                pytest.fail(f"stderr line {number} is not a JSON object: {line!r}")
