"""Test helpers: a real SecantusDB process, free ports, polling with deadlines."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from auditsvc.devtools import die_with_parent
from auditsvc.devtools.devrun import free_port, wait_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


class SecantusDB:
    """A real MongoDB-wire server on a free loopback port; stoppable and restartable."""

    def __init__(self, storage: str | None = None) -> None:
        self.port = free_port()
        self._own_dir = storage is None
        self.storage = storage or tempfile.mkdtemp(prefix="secantus-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            die_with_parent.command(
                [
                    str(BIN / "secantusd-py"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--storage-path",
                    self.storage,
                    "--log-level",
                    "ERROR",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        """Throws the server away: SIGKILL, since a graceful stop takes SecantusDB
        about 2 s and nothing of a closed server is read again (restart tests use
        ``stop``). Removes the storage directory if this object made it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.storage, ignore_errors=True)


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 10.0, interval: float = 0.05
) -> Any:
    """Polls ``check`` until it returns a truthy value or raises nothing falsy; deadline-bound."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s") from last


def replica_env(uri: str, database: str, **overrides: str) -> dict[str, str]:
    env = {
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": database,
        "MONGODB_TIMEOUT_MS": "2000",
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "REPLICA_ID": "test-1",
        "ENABLE_LEADER_ELECTION": "false",
        "ENABLE_AUDITOR": "false",
        "AUDIT_SYMBOLS": "BTCUSDT,ETHUSDT",
        "AUDIT_TIMEFRAMES": "1m,1h",
        "SHUTDOWN_GRACE": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    merged = {
        k: v for k, v in os.environ.items() if not k.startswith(("AUDIT", "GRPC_", "MONGODB"))
    }
    merged.update(env)
    return merged
