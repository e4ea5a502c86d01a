"""Real replica processes (`python -m auditsvc serve`) for multi-process tests."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools import die_with_parent
from tests.support import free_port, process_env, replica_env, wait_port

CALL_TIMEOUT = 5.0


class ReplicaProcess:
    # Every process started, so a fixture can kill what a failing test left behind.
    started: list[ReplicaProcess] = []

    def __init__(self, name: str, uri: str, database: str, log_dir: Path, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        settings = {
            "REPLICA_ID": name,
            "GRPC_PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            "ENABLE_LEADER_ELECTION": "true",
            "LEADER_ELECTION_HEARTBEAT_INTERVAL": "0.3",
            "LEADER_ELECTION_TIMEOUT": "1.2",
            "MONGODB_TIMEOUT_MS": "1000",
            "SHUTDOWN_GRACE": "2",
            "LOG_LEVEL": "INFO",
        }
        settings.update(env)
        self.env = process_env(replica_env(uri, database, **settings))
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.aio.Channel | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            die_with_parent.command([sys.executable, "-m", "auditsvc", "serve"]),
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        ReplicaProcess.started.append(self)
        wait_port(self.port, 30, self.proc)

    @property
    def stub(self) -> Any:
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(self.target)
        return pb_grpc.AuditServiceStub(self.channel)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    async def status(self) -> Any:
        return await self.stub.GetStatus(pb.GetStatusRequest(), timeout=CALL_TIMEOUT)

    async def leader(self) -> Any:
        return await self.stub.GetLeader(pb.GetLeaderRequest(), timeout=CALL_TIMEOUT)


async def leaders(replicas: Iterable[ReplicaProcess]) -> list[ReplicaProcess]:
    """Replicas whose GetStatus says ROLE_LEADER (unreachable ones are skipped)."""
    found = []
    for replica in replicas:
        if not replica.alive:
            continue
        try:
            if (await replica.status()).role == pb.ROLE_LEADER:
                found.append(replica)
        except grpc.aio.AioRpcError:
            continue
    return found


async def one_leader(replicas: list[ReplicaProcess], within: float) -> ReplicaProcess:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await leaders(replicas)
        if len(found) == 1:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no single leader within {within}s")


def kill_leftovers() -> None:
    """SIGKILLs every replica process a test started and did not stop."""
    while ReplicaProcess.started:
        replica = ReplicaProcess.started.pop()
        if replica.proc is not None and replica.proc.poll() is None:
            replica.proc.send_signal(signal.SIGCONT)
            replica.proc.kill()
            replica.proc.wait(timeout=10)
