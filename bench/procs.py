"""The processes a benchmark needs: SecantusDB, auditsvc replicas and the echo server.

Self-contained on purpose (the test helpers in tests/ belong to other suites).
Every process is started on a free 127.0.0.1 port and registered with a
``Processes`` set that kills whatever is left when a figure ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.devtools import die_with_parent
from auditsvc.devtools.devrun import free_port, wait_port

BIN = Path(sys.executable).parent
SERVICE = "auditpb.v1.AuditService"


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Process:
    """A child process whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                die_with_parent.command(self.argv),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def failure(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        return f"{self.name} (exit {code}): {tail(self.log_path)}"


class Database(Process):
    """``secantusd-py`` on a free port with its data in ``storage``."""

    def __init__(self, storage: Path, log_dir: Path) -> None:
        self.port = free_port()
        super().__init__(
            "secantusd",
            [
                str(BIN / "secantusd-py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(storage),
                "--log-level",
                "ERROR",
            ],
            os.environ,
            log_dir / "secantusd.log",
        )

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn()
        wait_port(self.port, 60, self.proc)

    def stop(self) -> None:
        """A throwaway server (its directory is deleted next): SIGKILL, since SIGTERM
        can take 10 s."""
        self.kill()


def service_env(uri: str, database: str, **overrides: str) -> dict[str, str]:
    """The environment of one ``python -m auditsvc serve`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT", "GRPC_", "MONGODB"))}
    env.update(
        {
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "MONGODB_TIMEOUT_MS": "5000",
            "GRPC_HOST": "127.0.0.1",
            "ENABLE_LEADER_ELECTION": "false",
            "ENABLE_AUDITOR": "false",
            "AUDIT_MAX_RANGE_CANDLES": "100000000",
            "SHUTDOWN_GRACE": "2",
            # BENCH_LOG_LEVEL=INFO (with --keep-logs) keeps every state change and
            # confirmation a replica logs, to explain a figure's outliers.
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class Replica(Process):
    """One auditsvc replica: ``python -m auditsvc serve`` with settings in its env.

    ``source`` runs the auditsvc package found in that directory instead of the
    installed one (``--service-root``, to measure a patch side by side).
    """

    def __init__(
        self,
        name: str,
        uri: str,
        database: str,
        log_dir: Path,
        source: Path | None = None,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        extra = {"PYTHONPATH": _pythonpath(source)} if source is not None else {}
        super().__init__(
            name,
            [sys.executable, "-m", "auditsvc", "serve"],
            service_env(
                uri,
                database,
                REPLICA_ID=name,
                GRPC_PORT=str(self.port),
                METRICS_PORT=str(self.metrics_port),
                **extra,
                **env,
            ),
            log_dir / f"{name}.log",
            cwd=source,
        )
        self.channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> Any:
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(
                self.target, options=[("grpc.max_receive_message_length", 64 << 20)]
            )
        return pb_grpc.AuditServiceStub(self.channel)

    async def start(self, ready_within: float = 60.0) -> None:
        """Starts the process and waits for readiness (database reachable, indexes made)."""
        self.spawn()
        try:
            await asyncio.to_thread(wait_port, self.port, ready_within, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}: {self.failure()}") from None
        health = health_pb2_grpc.HealthStub(self.stub_channel())
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"replica exited before ready: {self.failure()}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"replica not ready within {ready_within:g}s: {self.failure()}")

    def stub_channel(self) -> grpc.aio.Channel:
        self.stub  # noqa: B018 - creates the channel
        assert self.channel is not None
        return self.channel

    async def status(self, limit_s: float = 5.0) -> Any:
        return await self.stub.GetStatus(pb.GetStatusRequest(), timeout=limit_s)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        self.signal(signal.SIGCONT)
        self.terminate()


class Echo(Process):
    """The trivial echo service of figure 4, in its own process like the replica."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        super().__init__(
            "echo",
            [sys.executable, "-m", "bench.echo", "--port", str(self.port)],
            {**os.environ, "PYTHONPATH": _pythonpath()},
            log_dir / "echo.log",
        )

    async def start(self) -> None:
        self.spawn()
        await asyncio.to_thread(wait_port, self.port, 30, self.proc)

    async def close(self) -> None:
        self.terminate()


def _pythonpath(first: Path | None = None) -> str:
    root = str(first or Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


class Processes:
    """Whatever a figure started; ``close`` stops all of it (idempotent)."""

    def __init__(self) -> None:
        self._items: list[Replica | Echo] = []

    def add(self, item: Replica | Echo) -> Replica | Echo:
        self._items.append(item)
        return item

    async def close(self) -> None:
        items, self._items = self._items, []
        for item in items:
            with contextlib.suppress(Exception):
                await item.close()
