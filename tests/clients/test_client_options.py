"""ClientOptions validation and the small helpers behind the clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from auditclient import AuditClient, BlockingAuditClient, ClientOptions
from auditclient._backoff import backoff_delay, mutation_attempts
from auditclient._requests import gap_state_value, rule_value, strategy_value, to_timestamp
from auditclient._scores import LatestScores
from auditclient.errors import AuditError
from auditclient.options import channel_options, service_config
from auditpb.v1 import audit_pb2

from .fakes import score


class TestClientOptions:
    """Defaults, validation and derived channel options."""

    def test_defaults(self) -> None:
        """The documented defaults hold."""
        options = ClientOptions()
        assert (options.target, options.timeout, options.tls) == ("127.0.0.1:50051", 10.0, False)
        assert (options.max_attempts, options.token) == (5, None)

    def test_frozen(self) -> None:
        """Options cannot be changed after construction."""
        with pytest.raises(AttributeError):
            ClientOptions().timeout = 1.0  # type: ignore[misc]

    @pytest.mark.parametrize(
        "changes",
        [
            {"timeout": 0},
            {"target": ""},
            {"max_attempts": 6},
            {"max_attempts": 0},
            {"cert_chain": b"x"},
            {"root_certificates": b"x"},
            {"retry_initial_backoff": 3.0},
        ],
    )
    def test_invalid_values_raise(self, changes: dict[str, object]) -> None:
        """Inconsistent or out-of-range values raise ValueError."""
        with pytest.raises(ValueError):
            ClientOptions(**changes)  # type: ignore[arg-type]

    def test_keepalive_and_name_override(self) -> None:
        """Keepalive settings and the TLS name override reach the channel options."""
        options = dict(
            channel_options(
                ClientOptions(keepalive_time_ms=15_000, tls=True, tls_server_name="auditsvc")
            )
        )
        assert options["grpc.keepalive_time_ms"] == 15_000
        assert options["grpc.http2.max_pings_without_data"] == 0
        assert options["grpc.ssl_target_name_override"] == "auditsvc"

    def test_single_attempt_disables_the_retry_policy(self) -> None:
        """max_attempts=1 leaves the service config without a retry policy."""
        assert service_config(ClientOptions(max_attempts=1)) == {}


class TestHelpers:
    """Request building, backoff and score ordering."""

    def test_to_timestamp_converts_to_utc(self) -> None:
        """An aware datetime in another zone is converted to UTC; None stays None."""
        local = datetime(2024, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))
        assert to_timestamp(local, "start") == datetime(2024, 1, 1, tzinfo=UTC)
        assert to_timestamp(None, "start") is None

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (None, audit_pb2.STRATEGY_UNSPECIFIED),
            ("keep_newest", audit_pb2.STRATEGY_KEEP_NEWEST),
            ("KEEP-OLDEST", audit_pb2.STRATEGY_KEEP_OLDEST),
            ("STRATEGY_MANUAL", audit_pb2.STRATEGY_MANUAL),
            (audit_pb2.STRATEGY_MANUAL, audit_pb2.STRATEGY_MANUAL),
        ],
    )
    def test_strategy_value(self, given: int | str | None, expected: int) -> None:
        """Strategies are accepted as enum values or names."""
        assert strategy_value(given) == expected

    @pytest.mark.parametrize("bad", ["newest", 99])
    def test_unknown_strategy_raises(self, bad: int | str) -> None:
        """An unknown strategy raises ValueError."""
        with pytest.raises(ValueError):
            strategy_value(bad)

    def test_backoff_is_capped_and_jittered(self) -> None:
        """Delays double from the initial value, stay in [base/2, base], and are capped."""
        for attempt in range(40):
            base = min(2.0, 0.1 * 2**attempt)
            assert base / 2 <= backoff_delay(attempt, 0.1, 2.0) <= base

    def test_mutation_attempts(self) -> None:
        """Only a caller's request_id allows more than one attempt."""
        assert mutation_attempts(None, 3) == 1
        assert mutation_attempts("k", 3) == 3

    def test_latest_scores_only_moves_forward(self) -> None:
        """Older and equal scores of a series are refused; other series are independent."""
        latest = LatestScores()
        assert latest.admit(score("A", "1m", 10))
        assert not latest.admit(score("A", "1m", 10))
        assert not latest.admit(score("A", "1m", 9))
        assert latest.admit(score("A", "5m", 1))
        assert latest.admit(score("A", "1m", 11))


class TestEnumNames:
    """Gap states and anomaly rules take names as strategies do."""

    @pytest.mark.parametrize(
        ("parse", "given", "expected"),
        [
            (gap_state_value, "filled", audit_pb2.GAP_STATE_FILLED),
            (gap_state_value, "GAP_STATE_ACKNOWLEDGED", audit_pb2.GAP_STATE_ACKNOWLEDGED),
            (rule_value, "price-spike", audit_pb2.ANOMALY_RULE_PRICE_SPIKE),
            (rule_value, audit_pb2.ANOMALY_RULE_PRICE_SPIKE, audit_pb2.ANOMALY_RULE_PRICE_SPIKE),
        ],
    )
    def test_names_and_numbers(self, parse: Any, given: int | str, expected: int) -> None:
        assert parse(given) == expected

    @pytest.mark.parametrize(
        ("parse", "bad", "words"),
        [
            (gap_state_value, "healed", "unknown gap state"),
            (rule_value, "spike", "unknown anomaly"),
        ],
    )
    def test_unknown_name_is_named(self, parse: Any, bad: str, words: str) -> None:
        with pytest.raises(ValueError, match=words):
            parse(bad)
        with pytest.raises(ValueError):
            parse(999)


def _pager(tokens: dict[str, tuple[str, str]]) -> Any:
    """A method answering each page token with (item, next token)."""

    def method(request: Any, timeout: float, metadata: Any) -> Any:
        item, token = tokens[request.page_token]
        return SimpleNamespace(items=[item], next_page_token=token)

    return method


LAST_PAGE = {"": ("a", "t1"), "t1": ("b", "")}
REPEATED = {"": ("a", "t1"), "t1": ("b", "t1")}


class TestPaging:
    """Both clients follow page tokens to the last page and refuse a repeated token."""

    def test_blocking_client(self) -> None:
        client = BlockingAuditClient("127.0.0.1:1")
        try:
            pages = client._pages(_pager(LAST_PAGE), audit_pb2.ListGapsRequest(), _items, 1)
            assert list(pages) == ["a", "b"]
            got: list[str] = []
            with pytest.raises(AuditError, match="repeated page token"):
                for item in client._pages(_pager(REPEATED), audit_pb2.ListGapsRequest(), _items, 1):
                    got.append(item)
            assert got == ["a", "b"]
        finally:
            client.close()

    async def test_async_client(self) -> None:
        async def method(request: Any, **call: Any) -> Any:
            return pager(request, **call)

        client = AuditClient("127.0.0.1:1")
        try:
            pager = _pager(LAST_PAGE)
            request = audit_pb2.ListGapsRequest()
            assert [x async for x in client._pages(method, request, _items, 1)] == ["a", "b"]
            pager = _pager(REPEATED)
            got: list[str] = []
            with pytest.raises(AuditError, match="repeated page token"):
                async for item in client._pages(method, audit_pb2.ListGapsRequest(), _items, 1):
                    got.append(item)
            assert got == ["a", "b"]
        finally:
            await client.close()


def _items(page: Any) -> list[str]:
    return list(page.items)
