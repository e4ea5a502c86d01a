"""The Mongo driver holds no thread per blocked call (motor held an executor thread each).

A server that accepts connections and never answers makes every call block in
server selection. The calls are lease-document reads straight on the
``Database`` that ``connect`` builds (MongoLeaseStore would queue its own calls
behind one gate, and this is about the driver). Motor ran each call on a worker thread, so calls
stuck on a silent database piled up threads; PyMongo's asyncio client keeps
them as coroutines. The only threads it may start are asyncio's default
executor ones for ``getaddrinfo`` (a bounded pool, per connection attempt).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from pymongo.errors import PyMongoError

from auditsvc.storage.mongo.database import LEASES, connect

CALLS = 20
DNS_THREAD_PREFIX = "asyncio_"  # asyncio's default executor (loop.getaddrinfo)


class SilentServer:
    """Accepts TCP connections, reads what arrives and never replies."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


class TestBlockedCalls:
    """Lease calls blocked on a silent server are coroutines, not threads."""

    @pytest.mark.timeout(60)
    async def test_blocked_lease_calls_hold_no_threads(self) -> None:
        """Twenty lease reads stuck on a silent server start no thread beyond asyncio's DNS pool."""
        server = SilentServer()
        port = await server.start()
        before = _threads()
        database = connect(f"mongodb://127.0.0.1:{port}/?directConnection=true", "threads", 1500)
        seen: set[str] = set()
        try:
            leases = database.db[LEASES]
            calls = [asyncio.create_task(leases.find_one({"_id": f"e{i}"})) for i in range(CALLS)]
            async with asyncio.timeout(30):
                while not all(c.done() for c in calls):
                    seen |= _threads() - before
                    await asyncio.sleep(0.02)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await database.close()
            await server.close()
        assert server.connections >= 1, "the driver never reached the silent server"
        assert all(isinstance(o, PyMongoError) for o in outcomes), outcomes
        others = {name for name in seen if not name.startswith(DNS_THREAD_PREFIX)}
        assert not others, f"threads started by blocked calls: {sorted(others)}"
        assert len(seen) < CALLS, f"one thread per call: {sorted(seen)}"
