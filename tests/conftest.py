"""Shared fixtures: one SecantusDB per session, a fresh database per test, and
an in-process replica serving on a free port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.app import App
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.settings import Settings
from tests.cluster.harness import kill_leftovers
from tests.support import SecantusDB, eventually, replica_env


@pytest.fixture(autouse=True)
def _no_leftover_replicas() -> Iterator[None]:
    """Whatever a test does, no replica process outlives it."""
    yield
    kill_leftovers()


@pytest.fixture(scope="session")
def mongo() -> Iterator[SecantusDB]:
    server = SecantusDB()
    server.start()
    yield server
    server.close()


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_settings(mongo: SecantusDB, db_name: str) -> Callable[..., Settings]:
    def build(**overrides: str) -> Settings:
        return Settings.from_env(replica_env(mongo.uri, db_name, **overrides))

    return build


class Replica:
    def __init__(self, app: App, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.channel = channel
        self.stub = pb_grpc.AuditServiceStub(channel)
        self.target = f"127.0.0.1:{app.server.port}"


@pytest.fixture
async def start_replica() -> AsyncIterator[Callable[..., Any]]:
    started: list[Replica] = []

    async def start(
        settings: Settings, wait_ready: bool = True, failpoints: Failpoints | None = None
    ) -> Replica:
        app = App(settings, failpoints=failpoints)
        await app.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}")
        replica = Replica(app, channel)
        started.append(replica)
        if wait_ready:
            await eventually(lambda: _ready(app), within=15)
        return replica

    yield start
    for replica in started:
        await replica.channel.close()
        await replica.app.stop()


async def _ready(app: App) -> bool:
    return app.ready
