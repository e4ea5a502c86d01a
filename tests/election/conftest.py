"""Fixtures for the election tests: a real SecantusDB server and a fresh database per test."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from auditsvc.devtools import die_with_parent
from auditsvc.devtools.devrun import free_port
from auditsvc.storage.mongo.database import Database, connect

SERVER = Path(sys.executable).parent / "secantusd-py"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _pings(uri: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


class SecantusServer:
    """A ``secantusd-py`` process with in-memory storage on a free local port."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.uri = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> str:
        """Starts the server and returns its URI once a ping succeeds."""
        for _ in range(attempts):
            port = free_port()
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    die_with_parent.command(
                        [
                            str(SERVER),
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                            "--storage-path",
                            ":memory:",
                        ]
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            uri = f"mongodb://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT
            while process.poll() is None and time.monotonic() < deadline:
                if _pings(uri):
                    self._process, self.uri = process, uri
                    return uri
                time.sleep(0.05)
            _stop(process)  # exited (port taken?) or never answered: try another port
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"secantusd-py did not start after {attempts} attempts:\n{tail}")

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)
            self._process = None


@pytest.fixture(scope="session")
def secantus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a SecantusDB server shared by the session (each test uses its own database)."""
    if not SERVER.exists():
        pytest.fail(f"{SERVER} is missing: install the dev extras (secantusdb)")
    server = SecantusServer(tmp_path_factory.mktemp("secantus") / "secantusd.log")
    uri = server.start()
    try:
        yield uri
    finally:
        server.stop()


@pytest.fixture
async def database(secantus_uri: str) -> AsyncIterator[Database]:
    """A connected ``Database`` on a database name no other test uses; dropped afterwards."""
    name = f"election_{uuid.uuid4().hex[:12]}"
    db = connect(secantus_uri, name, 2000)
    try:
        yield db
    finally:
        try:
            async with asyncio.timeout(10):
                await db.client.drop_database(name)
        finally:
            await db.close()
