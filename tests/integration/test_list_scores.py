"""ListHealthScores over the wire: stored scores, filters, paging and precise refusals.

The live tail is off here: its state changes would race the listings compared."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2 as pb

TIMEOUT = 20.0


class TestListHealthScores:
    """Any replica pages through the stored scores; bad input names its field."""

    async def test_lists_and_pages(self, make_settings: Any, start_replica: Any) -> None:
        """After a cycle, every configured series is listed once across pages, in order."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        seen: list[tuple[str, str]] = []
        token = ""
        pages = 0
        while True:
            reply = await replica.stub.ListHealthScores(
                pb.ListHealthScoresRequest(page_size=1, page_token=token), timeout=TIMEOUT
            )
            seen += [(s.symbol, s.timeframe) for s in reply.scores]
            pages += 1
            token = reply.next_page_token
            if not token:
                break
        assert seen == sorted((s, t) for s in ("BTCUSDT", "ETHUSDT") for t in ("1h", "1m"))
        assert pages >= 4
        one = await replica.stub.ListHealthScores(
            pb.ListHealthScoresRequest(symbols=["ETHUSDT"], timeframes=["1m"]), timeout=TIMEOUT
        )
        assert [(s.symbol, s.timeframe) for s in one.scores] == [("ETHUSDT", "1m")]

    async def test_state_filter(self, make_settings: Any, start_replica: Any, mongo: Any) -> None:
        """The state filter returns only scores stored in that state."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        all_scores = await replica.stub.ListHealthScores(
            pb.ListHealthScoresRequest(), timeout=TIMEOUT
        )
        for state in (pb.SERIES_STATE_LIVE, pb.SERIES_STATE_LATE, pb.SERIES_STATE_NO_DATA):
            reply = await replica.stub.ListHealthScores(
                pb.ListHealthScoresRequest(state=state), timeout=TIMEOUT
            )
            assert all(s.state == state for s in reply.scores)
            assert len(reply.scores) == sum(1 for s in all_scores.scores if s.state == state)

    @pytest.mark.parametrize(
        ("request_kwargs", "code", "field"),
        [
            ({"symbols": ["NOPE"]}, grpc.StatusCode.NOT_FOUND, "symbols"),
            ({"timeframes": ["1d"]}, grpc.StatusCode.NOT_FOUND, "timeframes"),
            ({"timeframes": ["7x"]}, grpc.StatusCode.INVALID_ARGUMENT, "timeframes"),
            ({"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
            ({"page_size": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
            ({"page_token": "garbage"}, grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
            ({"state": 42}, grpc.StatusCode.INVALID_ARGUMENT, "state"),
        ],
    )
    async def test_refusals(
        self,
        make_settings: Any,
        start_replica: Any,
        request_kwargs: dict[str, Any],
        code: grpc.StatusCode,
        field: str,
    ) -> None:
        """Unknown names are NOT_FOUND and bad paging INVALID_ARGUMENT, each naming the field."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await replica.stub.ListHealthScores(
                pb.ListHealthScoresRequest(**request_kwargs), timeout=TIMEOUT
            )
        assert exc.value.code() == code
        assert field in (exc.value.details() or "")

    async def test_token_bound_to_filters(self, make_settings: Any, start_replica: Any) -> None:
        """A token replayed with other filters is INVALID_ARGUMENT naming page_token."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        first = await replica.stub.ListHealthScores(
            pb.ListHealthScoresRequest(page_size=1), timeout=TIMEOUT
        )
        assert first.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await replica.stub.ListHealthScores(
                pb.ListHealthScoresRequest(
                    page_size=1, page_token=first.next_page_token, symbols=["BTCUSDT"]
                ),
                timeout=TIMEOUT,
            )
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (exc.value.details() or "")


class TestClients:
    """AuditClient and BlockingAuditClient page through ListHealthScores."""

    async def test_async_and_blocking(self, make_settings: Any, start_replica: Any) -> None:
        """Both clients return every stored score, following page tokens."""
        import asyncio

        from auditclient import AuditClient, BlockingAuditClient

        replica = await start_replica(make_settings(LIVE_MODE="off"))
        await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
        async with AuditClient(replica.target) as client:
            got = [
                (s.symbol, s.timeframe)
                async for s in client.list_health_scores(page_size=1, call_timeout=TIMEOUT)
            ]
        assert len(got) == 4 and got == sorted(got)

        def blocking() -> list[tuple[str, str]]:
            with BlockingAuditClient(replica.target) as c:
                return [
                    (s.symbol, s.timeframe)
                    for s in c.list_health_scores(symbols=["BTCUSDT"], call_timeout=TIMEOUT)
                ]

        assert await asyncio.wait_for(asyncio.to_thread(blocking), TIMEOUT) == [
            ("BTCUSDT", "1h"),
            ("BTCUSDT", "1m"),
        ]
