"""Every query the stores make on duplicate_archive and the audit state is index-backed:
explain (queryPlanner) shows no COLLSCAN and an index stage, read the same way
on SecantusDB and on MongoDB (IXSCAN, IDHACK or EXPRESS_* stages)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId

from auditsvc.storage.mongo.database import (
    ARCHIVE,
    BACKFILLS,
    CYCLES,
    GAPS,
    REQUESTS,
    SERIES,
    connect,
    ensure_indexes,
)

IDS = [ObjectId(), ObjectId()]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# (collection, filter, sort, limit) exactly as the stores issue them.
# A str in the sort position is a hint instead.
QUERIES: list[tuple[str, dict[str, Any], dict[str, int] | str | None, int]] = [
    # MongoDuplicateStore.archive (upsert filter) and .delete (archive check); restore
    # marks entries restored by this same filter (never by the sub-document _id)
    (ARCHIVE, {"request_id": "r", "collection": "c", "document._id": IDS[0]}, None, 0),
    (ARCHIVE, {"request_id": "r", "collection": "c", "document._id": {"$in": IDS}}, None, 0),
    # restore: known(), the next pending entries, then marking them restored
    (ARCHIVE, {"request_id": "r"}, None, 1),
    (ARCHIVE, {"request_id": "r", "restored_at": None}, None, 100),
    (ARCHIVE, {"request_id": "r", "restored_at": None}, "by_key", 0),
    # the slot guard reads kept candles by _id
    ("candles_BTCUSDT_1m", {"_id": {"$in": IDS}}, None, 0),
    # MongoStateStore
    (CYCLES, {"_id": "cycle-1"}, None, 0),
    (CYCLES, {}, {"started_at": -1}, 1),
    (CYCLES, {"succeeded": True}, {"started_at": -1}, 1),
    (SERIES, {"_id": "BTCUSDT|1m"}, None, 0),
    (SERIES, {"computed_at": {"$gt": NOW}}, {"computed_at": 1}, 0),
    (REQUESTS, {"_id": "dedupe:r"}, None, 0),
    # The healing pass (MongoBackfillStore)
    (BACKFILLS, {"open": True}, {"progress_at": 1}, 1000),
    (GAPS, {"state": "backfill_requested"}, None, 1000),
    (GAPS, {"fill_unreported": True}, None, 1000),
    (
        GAPS,
        {"cycle_id": "c", "state": "open"},
        {"severity_rank": 1, "missing_candles": -1, "start_time": -1},
        0,
    ),
]


def _stages(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "stage" in plan:
            yield str(plan["stage"])
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _stages(item)


@pytest.fixture
async def database(make_settings: Any) -> Any:
    settings = make_settings()
    handle = connect(settings.mongo.uri, settings.mongo.database, 2000)
    await ensure_indexes(handle)
    yield handle
    await handle.close()


class TestIndexPlans:
    """The archive and audit-state queries never scan a collection."""

    @pytest.mark.parametrize(("collection", "query", "sort", "limit"), QUERIES)
    async def test_query_uses_an_index(
        self,
        database: Any,
        collection: str,
        query: dict[str, Any],
        sort: dict[str, int] | str | None,
        limit: int,
    ) -> None:
        """explain's winning plan has an index stage and no COLLSCAN."""
        await database.db["candles_BTCUSDT_1m"].insert_one({"_id": IDS[0]})
        command: dict[str, Any] = {"find": collection, "filter": query}
        if isinstance(sort, str):
            command["hint"] = sort
        elif sort:
            command["sort"] = sort
        if limit:
            command["limit"] = limit
        explained = await database.db.command("explain", command, verbosity="queryPlanner")
        stages = list(_stages(explained["queryPlanner"]["winningPlan"]))
        assert "COLLSCAN" not in stages, (collection, query, stages)
        assert any("IXSCAN" in s or s == "IDHACK" or s.startswith("EXPRESS") for s in stages), (
            collection,
            query,
            stages,
        )
