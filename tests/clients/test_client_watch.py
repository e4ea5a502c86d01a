"""watch_health: reconnects, and never goes back in time per series."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from auditclient import AuditClient, StreamEvent, Unauthenticated, Unavailable, verdict_age
from auditclient._scores import LatestScores
from auditpb.v1 import audit_pb2

from .conftest import fast_options
from .fakes import FakeAuditService, FakeServer, live, score

LIVE, UNKNOWN = audit_pb2.SERIES_STATE_LIVE, audit_pb2.SERIES_STATE_UNKNOWN
T0 = datetime(2024, 1, 1, tzinfo=UTC)


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


class TestVerdicts:
    """Scores that differ only in their verdict are news; replays are not."""

    def test_unknown_with_the_same_stamps_is_admitted(self) -> None:
        """The move to UNKNOWN keeps the last verdict_time and computed_at, and still passes."""
        latest = LatestScores()
        assert latest.admit(live("BTC", "1s", LIVE, verdict=T0))
        assert not latest.admit(live("BTC", "1s", LIVE, verdict=T0))  # a replay
        assert latest.admit(live("BTC", "1s", UNKNOWN, verdict=T0))
        assert not latest.admit(live("BTC", "1s", UNKNOWN, verdict=T0))
        assert latest.admit(live("BTC", "1s", LIVE, verdict=T0 + timedelta(seconds=1)))

    def test_older_verdicts_and_cycles_are_dropped(self) -> None:
        """An earlier verdict_time, or an earlier computed_at, is never admitted."""
        latest = LatestScores()
        assert latest.admit(live("BTC", "1s", LIVE, at=5, verdict=T0))
        assert not latest.admit(live("BTC", "1s", UNKNOWN, at=5, verdict=T0 - timedelta(1)))
        assert not latest.admit(live("BTC", "1s", UNKNOWN, at=4, verdict=T0))
        assert latest.admit(live("BTC", "1s", UNKNOWN, at=5))  # no confirmation: fail closed
        assert latest.admit(live("ETH", "1s", LIVE, at=1, verdict=T0))

    def test_verdict_age(self) -> None:
        """The age is now minus verdict_time; None without a verdict_time."""
        scored = live("BTC", "1s", LIVE, verdict=T0)
        assert verdict_age(scored, T0 + timedelta(seconds=2.5)) == 2.5
        assert verdict_age(scored, T0 - timedelta(seconds=1)) == -1.0
        assert verdict_age(live("BTC", "1s", UNKNOWN)) is None
        age = verdict_age(live("BTC", "1s", LIVE, verdict=datetime.now(UTC)))
        assert age is not None and 0 <= age < 60

    async def test_stream_yields_the_move_to_unknown(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """LIVE then UNKNOWN at the same verdict_time both reach the caller."""
        service.stream_batches = [
            [live("BTC", "1s", LIVE, verdict=T0), live("BTC", "1s", UNKNOWN, verdict=T0)]
        ]
        stream = aiter(client.watch_health())
        async with asyncio.timeout(10):
            states = [(await anext(stream)).state for _ in range(2)]
            await stream.aclose()
        assert states == [LIVE, UNKNOWN]


class Recorder(list[StreamEvent]):
    """An on_connection callback that keeps the events and wakes waiters."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def __call__(self, event: StreamEvent) -> None:
        self.append(event)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` events arrived (the caller bounds it with a timeout)."""
        while len(self) < count:
            self.changed.clear()
            await self.changed.wait()


class TestConnectionEvents:
    """on_connection hears of each outage once, and of each return once."""

    async def test_server_restart(self, service: FakeAuditService) -> None:
        """A stop reports disconnected (UNAVAILABLE); the restart reports reconnected."""
        service.stream_batches = [[score("BTC", "1m", 1)]]
        server = await FakeServer(service).start()
        events = Recorder()
        try:
            async with AuditClient(options=fast_options(server.target)) as client:
                stream = aiter(client.watch_health(on_connection=events))
                async with asyncio.timeout(20):
                    await anext(stream)
                    pending = asyncio.ensure_future(anext(stream))
                    await server.stop()
                    await events.wait_for(1)
                    assert events[0].kind == "disconnected"
                    assert isinstance(events[0].error, Unavailable)
                    service.stream_batches = [[score("BTC", "1m", 1), score("BTC", "1m", 2)]]
                    await server.start()
                    assert key(await pending) == ("BTC", "1m", 2)
                    await stream.aclose()
        finally:
            await server.stop()
        assert [e.kind for e in events] == ["disconnected", "reconnected"]
        assert events[1].error is None and events[1].down_for > 0

    async def test_stream_end_and_first_failure(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """Failed first attempts, and a stream that ends, each report one outage."""
        service.failures["StreamHealthScores"] = [
            (grpc.StatusCode.UNAVAILABLE, "restarting", ()),
            (grpc.StatusCode.UNAVAILABLE, "still restarting", ()),
        ]
        service.stream_batches = [[score("BTC", "1m", 1)], [score("BTC", "1m", 2)]]
        events = Recorder()
        stream = aiter(client.watch_health(on_connection=events))
        async with asyncio.timeout(10):
            assert await take(stream, 2) == [("BTC", "1m", 1), ("BTC", "1m", 2)]
            await stream.aclose()
        kinds = [e.kind for e in events]
        assert kinds == ["disconnected", "reconnected", "disconnected", "reconnected"]
        assert isinstance(events[0].error, Unavailable) and events[0].error.details == "restarting"
        assert events[2].error is not None and "ended" in str(events[2].error)
        assert service.calls["StreamHealthScores"] == 4

    async def test_callback_error_ends_the_iteration(
        self, client: AuditClient, service: FakeAuditService
    ) -> None:
        """What on_connection raises comes out of the iterator, and no reconnect follows."""
        service.failures["StreamHealthScores"] = [(grpc.StatusCode.UNAVAILABLE, "restarting", ())]

        def refuse(event: StreamEvent) -> None:
            raise RuntimeError(f"stop at {event.kind}")

        async with asyncio.timeout(10):
            with pytest.raises(RuntimeError, match="stop at disconnected"):
                await anext(aiter(client.watch_health(on_connection=refuse)))
        assert service.calls["StreamHealthScores"] == 1
