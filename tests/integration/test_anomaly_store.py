"""The anomaly store and ListAnomalies (issue 21), against SecantusDB: one finding per
key whoever writes it first, resolution by range and rule, fenced writes, and the
RPC's filters, paging and refusals on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.errors import Fenced
from auditsvc.domain.records import AnomalyQuery, AnomalyRecord
from auditsvc.ops.settings import Settings
from auditsvc.storage.interfaces import JudgedRange
from auditsvc.storage.mongo import MongoLeadershipStore, connect
from auditsvc.storage.mongo.anomaly_store import MongoAnomalyStore
from auditsvc.storage.mongo.database import (
    ANOMALIES,
    Database,
    detect_transactions,
    ensure_indexes,
)

TIMEOUT = 20.0
MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
R = AnomalyRule


def finding(
    symbol: str, open_ms: int, rule: AnomalyRule, now_ms: int, *, live: bool = False
) -> AnomalyRecord:
    anomaly = Anomaly(open_ms, rule, f"{rule.value} at {open_ms}", "high", 1.0, 2.0)
    return AnomalyRecord(symbol, "1m", anomaly, now_ms, live)


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    await asyncio.wait_for(ensure_indexes(handle), TIMEOUT)
    yield handle
    await handle.close()


class TestRecord:
    """record() upserts one finding per key and reports only the new ones."""

    async def test_first_writer_kept(self, database: Database) -> None:
        """The tail's first sighting keeps detected_at and detected_live when a cycle re-finds."""
        store = MongoAnomalyStore(database)
        tail = finding("BTCUSDT", T0, R.HIGH_BELOW_BODY, T0 + 1000, live=True)
        new = await asyncio.wait_for(store.record([tail], 1), TIMEOUT)
        assert new == [tail]
        cycle = finding("BTCUSDT", T0, R.HIGH_BELOW_BODY, T0 + 9000)
        again = await asyncio.wait_for(store.record([cycle, cycle], 1), TIMEOUT)
        assert again == []
        (stored,) = await asyncio.wait_for(store.list(AnomalyQuery()), TIMEOUT)
        assert (stored.detected_ms, stored.detected_live) == (T0 + 1000, True)
        assert await database.db[ANOMALIES].count_documents({}) == 1

    async def test_resolve_by_range_rule_and_sighting(self, database: Database) -> None:
        """Only findings in the range, of the rules judged and not seen since are removed."""
        store = MongoAnomalyStore(database)
        old = T0 + 1000
        await store.record(
            [
                finding("BTCUSDT", T0, R.PRICE_INVALID, old),
                finding("BTCUSDT", T0 + MIN, R.PRICE_SPIKE, old),
                finding("BTCUSDT", T0 + 5 * MIN, R.PRICE_INVALID, old),  # outside
                finding("BTCUSDT", T0 + 2 * MIN, R.VOLUME_INVALID, old + 10_000),  # seen later
                finding("ETHUSDT", T0, R.PRICE_INVALID, old),  # another series
            ],
            1,
        )
        judged = JudgedRange(
            "1m", ("BTCUSDT",), T0, T0 + 5 * MIN, frozenset({R.PRICE_INVALID, R.VOLUME_INVALID})
        )
        removed = await asyncio.wait_for(store.resolve([judged], old + 5000), TIMEOUT)
        assert removed == 1
        left = {
            (a.symbol, a.anomaly.open_time_ms, a.anomaly.rule)
            for a in await store.list(AnomalyQuery())
        }
        assert left == {
            ("BTCUSDT", T0 + MIN, R.PRICE_SPIKE),
            ("BTCUSDT", T0 + 5 * MIN, R.PRICE_INVALID),
            ("BTCUSDT", T0 + 2 * MIN, R.VOLUME_INVALID),
            ("ETHUSDT", T0, R.PRICE_INVALID),
        }

    async def test_counts(self, database: Database) -> None:
        """Findings, distinct candles and the newest candle, per series in the window."""
        store = MongoAnomalyStore(database)
        await store.record(
            [
                finding("BTCUSDT", T0, R.PRICE_INVALID, T0),
                finding("BTCUSDT", T0, R.VOLUME_INVALID, T0),
                finding("BTCUSDT", T0 + 3 * MIN, R.PRICE_SPIKE, T0),
                finding("BTCUSDT", T0 + 99 * MIN, R.PRICE_SPIKE, T0),  # outside
            ],
            1,
        )
        counts = await asyncio.wait_for(
            store.counts("1m", ["BTCUSDT", "ETHUSDT"], T0, T0 + 10 * MIN), TIMEOUT
        )
        assert list(counts) == ["BTCUSDT"]
        c = counts["BTCUSDT"]
        assert (c.findings, c.candles, c.newest_open_ms) == (3, 2, T0 + 3 * MIN)

    async def test_stale_epoch_is_fenced(
        self, make_settings: Callable[..., Settings], database: Database
    ) -> None:
        """A write under an epoch the fence has moved past stores nothing."""
        settings = make_settings(ENABLE_LEADER_ELECTION="true")
        assert await detect_transactions(database)  # the transactional fence, as in production
        store = MongoAnomalyStore(database)
        leases = MongoLeadershipStore(database, settings.election.name, "old")
        # A newer leader has written the fence at epoch 5; epoch 4 holds no lease.
        await database.db["leader_fence"].insert_one({"_id": settings.election.name, "epoch": 5})
        new = [finding("BTCUSDT", T0, R.PRICE_INVALID, T0)]
        with pytest.raises(Fenced):
            await asyncio.wait_for(
                leases.write_fenced(4, lambda s: store.record(new, 4, s)), TIMEOUT
            )
        assert await database.db[ANOMALIES].count_documents({}) == 0


async def seeded(make_settings: Any, start_replica: Any) -> Any:
    """A replica with findings on two symbols, two timeframes and three rules."""
    replica = await start_replica(make_settings(LIVE_MODE="off"))
    store = MongoAnomalyStore(replica.app.database)
    records = [
        finding(sym, T0 + i * MIN, rule, T0)
        for sym in ("BTCUSDT", "ETHUSDT")
        for i, rule in enumerate((R.PRICE_INVALID, R.PRICE_SPIKE, R.FROZEN_FEED, R.PRICE_INVALID))
    ]
    records.append(
        AnomalyRecord("BTCUSDT", "1h", Anomaly(T0, R.AGGREGATE_MISMATCH, "x", "open", 1.0, 2.0), T0)
    )
    await asyncio.wait_for(store.record(records, 0), TIMEOUT)
    return replica


class TestListAnomalies:
    """ListAnomalies on the wire: filters, paging in key order, and refusals naming the field."""

    async def test_pages_in_order(self, make_settings: Any, start_replica: Any) -> None:
        """Every finding is listed once across pages of 2, ordered by its key."""
        replica = await seeded(make_settings, start_replica)
        seen: list[tuple[str, str, int, int]] = []
        token, pages = "", 0
        while True:
            reply = await replica.stub.ListAnomalies(
                pb.ListAnomaliesRequest(page_size=2, page_token=token), timeout=TIMEOUT
            )
            seen += [
                (a.symbol, a.timeframe, a.open_time.ToMilliseconds(), a.rule)
                for a in reply.anomalies
            ]
            pages += 1
            token = reply.next_page_token
            if not token:
                break
        assert len(seen) == 9 and pages == 5
        names = [(s, tf, t, pb.AnomalyRule.Name(r)) for s, tf, t, r in seen]
        assert names == sorted(names)
        first = (
            await replica.stub.ListAnomalies(pb.ListAnomaliesRequest(), timeout=TIMEOUT)
        ).anomalies[0]
        assert first.HasField("observed") and first.observed == 1.0 and first.expected == 2.0

    async def test_filters(self, make_settings: Any, start_replica: Any) -> None:
        """Symbol, timeframe, rules and the open-time range each narrow the answer."""
        replica = await seeded(make_settings, start_replica)

        async def keys(**kwargs: Any) -> list[tuple[str, str, int, str]]:
            reply = await replica.stub.ListAnomalies(
                pb.ListAnomaliesRequest(**kwargs), timeout=TIMEOUT
            )
            return [
                (
                    a.symbol,
                    a.timeframe,
                    (a.open_time.ToMilliseconds() - T0) // MIN,
                    pb.AnomalyRule.Name(a.rule),
                )
                for a in reply.anomalies
            ]

        assert await keys(symbol="ETHUSDT", rules=[pb.ANOMALY_RULE_PRICE_INVALID]) == [
            ("ETHUSDT", "1m", 0, "ANOMALY_RULE_PRICE_INVALID"),
            ("ETHUSDT", "1m", 3, "ANOMALY_RULE_PRICE_INVALID"),
        ]
        assert await keys(timeframe="1h") == [
            ("BTCUSDT", "1h", 0, "ANOMALY_RULE_AGGREGATE_MISMATCH")
        ]
        start, end = pb.ListAnomaliesRequest().start_time, pb.ListAnomaliesRequest().end_time
        start.FromMilliseconds(T0 + MIN)
        end.FromMilliseconds(T0 + 3 * MIN)
        ranged = await keys(symbol="BTCUSDT", timeframe="1m", start_time=start, end_time=end)
        assert [k[2] for k in ranged] == [1, 2]

    @pytest.mark.parametrize(
        ("request_kwargs", "code", "field"),
        [
            ({"symbol": "NOPE"}, grpc.StatusCode.NOT_FOUND, "symbol"),
            ({"timeframe": "1d"}, grpc.StatusCode.NOT_FOUND, "timeframe"),
            ({"timeframe": "7x"}, grpc.StatusCode.INVALID_ARGUMENT, "timeframe"),
            ({"rules": [0]}, grpc.StatusCode.INVALID_ARGUMENT, "rules"),
            ({"rules": [99]}, grpc.StatusCode.INVALID_ARGUMENT, "rules"),
            ({"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
            ({"page_size": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
            ({"page_token": "garbage"}, grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
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
        """Unknown names are NOT_FOUND, bad rules and paging INVALID_ARGUMENT, naming the field."""
        replica = await start_replica(make_settings(LIVE_MODE="off"))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await replica.stub.ListAnomalies(
                pb.ListAnomaliesRequest(**request_kwargs), timeout=TIMEOUT
            )
        assert exc.value.code() == code
        assert field in (exc.value.details() or "")

    async def test_token_bound_to_filters(self, make_settings: Any, start_replica: Any) -> None:
        """A token replayed with other filters is refused, naming page_token."""
        replica = await seeded(make_settings, start_replica)
        first = await replica.stub.ListAnomalies(
            pb.ListAnomaliesRequest(page_size=1), timeout=TIMEOUT
        )
        assert first.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await replica.stub.ListAnomalies(
                pb.ListAnomaliesRequest(
                    page_size=1, page_token=first.next_page_token, symbol="BTCUSDT"
                ),
                timeout=TIMEOUT,
            )
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (exc.value.details() or "")
