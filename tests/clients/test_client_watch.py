"""watch_health: reconnects, and never goes back in time per series."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from auditclient import AuditClient, Unauthenticated, Unavailable

from .conftest import fast_options
from .fakes import FakeAuditService, FakeServer, score


def key(s: Any) -> tuple[str, str, int]:
    """(symbol, timeframe, computed_at seconds) of a score."""
    return (s.symbol, s.timeframe, s.computed_at.seconds)


async def take(stream: AsyncIterator[Any], n: int) -> list[tuple[str, str, int]]:
    """The next ``n`` scores of ``stream``."""
    return [key(await anext(stream)) for _ in range(n)]


class TestWatchHealth:
    """Scores stream in, survive server restarts, and stay monotonic per series."""

    async def test_reconnects_after_server_restart_without_going_back(
        self, service: FakeAuditService
    ) -> None:
        """After a stop and restart on the same port, replayed old and equal scores are dropped."""
        service.stream_batches = [[score("BTC", "1m", 100), score("ETH", "1m", 100)]]
        server = await FakeServer(service).start()
        try:
            async with AuditClient(options=fast_options(server.target)) as client:
                stream = aiter(client.watch_health())
                async with asyncio.timeout(10):
                    assert await take(stream, 2) == [("BTC", "1m", 100), ("ETH", "1m", 100)]
                    await server.stop()
                    service.stream_batches = [
                        [
                            score("BTC", "1m", 50),
                            score("BTC", "1m", 100),
                            score("ETH", "1m", 100),
                            score("BTC", "1m", 200),
                            score("ETH", "5m", 10),
                        ]
                    ]
                    await asyncio.sleep(0.2)  # let the client see the outage
                    await server.start()
                    assert await take(stream, 2) == [("BTC", "1m", 200), ("ETH", "5m", 10)]
                    await stream.aclose()
        finally:
            await server.stop()
        assert service.calls["StreamHealthScores"] >= 2

    async def test_reconnects_when_the_stream_ends(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """A stream that ends is reopened; the repeated snapshot is deduplicated."""
        service.stream_batches = [
            [score("BTC", "1m", 1)],
            [score("BTC", "1m", 1)],
            [score("BTC", "1m", 1), score("BTC", "1m", 2)],
        ]
        stream = aiter(client.watch_health(["BTC"], ["1m"]))
        async with asyncio.timeout(10):
            assert await take(stream, 2) == [("BTC", "1m", 1), ("BTC", "1m", 2)]
            await stream.aclose()
        assert service.calls["StreamHealthScores"] == 3
        request = service.requests["StreamHealthScores"][0]
        assert (list(request.symbols), list(request.timeframes)) == (["BTC"], ["1m"])

    async def test_reconnects_after_unavailable(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """An UNAVAILABLE stream is retried with backoff."""
        service.failures["StreamHealthScores"] = [(grpc.StatusCode.UNAVAILABLE, "restarting", ())]
        service.stream_batches = [[score("BTC", "1m", 5)]]
        stream = aiter(client.watch_health())
        async with asyncio.timeout(10):
            assert await take(stream, 1) == [("BTC", "1m", 5)]
            await stream.aclose()
        assert service.calls["StreamHealthScores"] == 2

    async def test_other_errors_are_raised(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """UNAUTHENTICATED is not retried but raised as Unauthenticated."""
        service.always["StreamHealthScores"] = (grpc.StatusCode.UNAUTHENTICATED, "bad token", ())
        async with asyncio.timeout(10):
            with pytest.raises(Unauthenticated):
                await anext(aiter(client.watch_health()))
        assert service.calls["StreamHealthScores"] == 1

    async def test_max_reconnects_gives_up(self) -> None:
        """With max_reconnects, an unreachable server raises after that many reconnects."""
        async with AuditClient(options=fast_options("127.0.0.1:1")) as client:
            async with asyncio.timeout(10):
                with pytest.raises(Unavailable):
                    await anext(aiter(client.watch_health(max_reconnects=2)))

    async def test_stream_deadline_reopens_silently(self, service: FakeAuditService) -> None:
        """When the stream's own deadline passes it is reopened, with no error and no repeat."""
        service.stream_batches = [[score("BTC", "1m", 1)]]
        server = await FakeServer(service).start()
        try:
            options = fast_options(server.target, stream_timeout=0.2)
            async with AuditClient(options=options) as client:
                stream = aiter(client.watch_health())
                async with asyncio.timeout(10):
                    assert await take(stream, 1) == [("BTC", "1m", 1)]
                    pending = asyncio.ensure_future(anext(stream))
                    await asyncio.sleep(0.7)
                    assert not pending.done()
                    pending.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await pending
                    await stream.aclose()
        finally:
            await server.stop()
        assert service.calls["StreamHealthScores"] >= 3
