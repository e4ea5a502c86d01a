"""Connection, collection names and the indexes the service relies on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from auditsvc.domain.records import RESULT_TTL_DAYS
from auditsvc.storage.mongo import driver_compat

LEASES = "leader_election"
# One fence document per election, written only by fenced batches and new leaders.
FENCES = "leader_fence"
CYCLES = "audit_cycles"
# A cycle's series reports, in parts of at most REPORT_PART reports each.
CYCLE_REPORTS = "audit_cycle_reports"
# Per series: its score, and (field ``settled``) what its last default-window
# audit settled, for incremental cycles.
SERIES = "audit_series"
GAPS = "audit_gaps"
# Candle content findings, one per (series, open time, rule): storage/mongo/anomaly_store.
ANOMALIES = "audit_anomalies"
# The live tail's heartbeat: one document, the instant it last vouched for every series.
VERDICTS = "audit_verdicts"
BACKFILLS = "backfill_requests"
ACKS = "gap_acknowledgements"
ARCHIVE = "duplicate_archive"
AUDIT_LOG = "audit_log"
REQUESTS = "audit_requests"

LEASE_TTL_S = 7 * 24 * 3600
# Cycles and the idempotency records that point at them expire together.
CYCLE_TTL_S = RESULT_TTL_DAYS * 24 * 3600

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_dt(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


def to_ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - EPOCH) // dt.timedelta(milliseconds=1)


@dataclass
class Database:
    """The client and database handle, plus whether transactions are available.

    PyMongo's native asyncio client: no worker threads, so a call blocked on an
    unreachable server holds a coroutine, not a thread. ``close`` is a coroutine.
    """

    client: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]
    transactions: bool

    async def close(self) -> None:
        await self.client.close()


def connect(uri: str, database: str, timeout_ms: int) -> Database:
    """Builds the client without contacting the server (AsyncMongoClient connects lazily).

    On Python 3.11 it first mends the driver's condition waits, without which a
    cancelled call during an outage can hang the client for good (driver_compat).
    """
    driver_compat.install()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms, 30_000),
        appname="auditsvc",
        # Nothing acknowledged may be rolled back by a failover: leases, fences,
        # archives and deletes above all (docs/AUDITOR.md, Durability).
        w="majority",
    )
    return Database(client=client, db=client[database], transactions=False)


async def detect_transactions(database: Database, allowed: bool = True) -> bool:
    """Transactions need a replica set or mongos; a bare mongod has none."""
    hello = await database.client.admin.command("hello")
    supported = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    database.transactions = allowed and supported
    return database.transactions


INDEXES: dict[str, list[IndexModel]] = {
    # Cleans up leases nobody has held for a week (old election names, setup-db
    # probes). Failover never waits for it: expiry is judged in the acquire filter.
    # Deleting a lease restarts its epoch at 1, which is why the grace is long:
    # after a week without any holder no writer of an old term can be alive, and
    # fencing also matches the holder's id.
    LEASES: [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=LEASE_TTL_S, name="lease_ttl")
    ],
    CYCLES: [
        IndexModel([("started_at", DESCENDING)], name="by_start"),
        # last_success_ms: the newest succeeded cycle.
        IndexModel([("succeeded", ASCENDING), ("started_at", DESCENDING)], name="by_outcome"),
        # Keep two weeks of cycles (their reports expire with them, below).
        IndexModel([("finished_at", ASCENDING)], expireAfterSeconds=CYCLE_TTL_S, name="cycle_ttl"),
    ],
    CYCLE_REPORTS: [
        IndexModel([("cycle_id", ASCENDING), ("part", ASCENDING)], name="by_cycle_part"),
        IndexModel([("finished_at", ASCENDING)], expireAfterSeconds=CYCLE_TTL_S, name="report_ttl"),
    ],
    SERIES: [
        IndexModel([("computed_at", ASCENDING)], name="by_computed"),
        # A reader without change streams polls on the last change of either writer.
        IndexModel([("changed_at", ASCENDING)], name="by_changed"),
    ],
    GAPS: [
        IndexModel(
            [("symbol", ASCENDING), ("timeframe", ASCENDING), ("start_time", ASCENDING)],
            name="by_series_start",
        ),
        # Filled and unfillable gaps carry their own expiry (now + GAP_HISTORY_RETENTION),
        # so a changed setting applies to new history without rebuilding the index.
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="gap_history_ttl"),
        # The healing pass: a cycle's OPEN gaps worst first, and the requested gaps.
        # (SecantusDB plans the sort in memory either way: the cycle's OPEN gaps only.)
        IndexModel([("cycle_id", ASCENDING), ("state", ASCENDING)], name="heal_candidates"),
        IndexModel([("state", ASCENDING)], name="by_state"),
        IndexModel([("fill_unreported", ASCENDING)], name="fills_to_report"),
    ],
    ANOMALIES: [
        # ListAnomalies' order, a cycle's resolution and counts (series + time range).
        IndexModel(
            [
                ("symbol", ASCENDING),
                ("timeframe", ASCENDING),
                ("open_time", ASCENDING),
                ("rule", ASCENDING),
            ],
            name="by_series_time_rule",
        ),
        # ListAnomalies across every symbol of one timeframe, or by time alone.
        IndexModel([("timeframe", ASCENDING), ("open_time", ASCENDING)], name="by_timeframe_time"),
    ],
    BACKFILLS: [
        # One open request per gap: data writers set open=false when they finish.
        IndexModel(
            [("gap_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"open": True},
            name="one_open_per_gap",
        ),
        IndexModel([("open", ASCENDING)], name="by_open"),
        # The healing pass judges live requests oldest progress first.
        IndexModel([("open", ASCENDING), ("progress_at", ASCENDING)], name="by_open_progress"),
        IndexModel([("open", ASCENDING), ("timeframe", ASCENDING)], name="by_open_timeframe"),
    ],
    ARCHIVE: [
        IndexModel([("request_id", ASCENDING)], name="by_request"),
        # The archive key as plain fields: lookups by the sub-document _id are not
        # served by the _id index on every server, and a scan per batch grows with
        # the archive (427 ms per lookup at 4k entries).
        IndexModel(
            [("request_id", ASCENDING), ("collection", ASCENDING), ("document._id", ASCENDING)],
            name="by_key",
        ),
        # Restore's "next entries of this request not yet restored".
        IndexModel([("request_id", ASCENDING), ("restored_at", ASCENDING)], name="pending"),
        IndexModel([("epoch", ASCENDING), ("removed_at", ASCENDING)], name="by_epoch"),
    ],
    AUDIT_LOG: [IndexModel([("at", DESCENDING)], name="by_time")],
    # Clients send a fresh request_id per mutation: without expiry this grows for ever.
    # Same lifetime as the cycles the records point at.
    REQUESTS: [IndexModel([("at", ASCENDING)], expireAfterSeconds=CYCLE_TTL_S, name="request_ttl")],
}


COLLECTIONS = (
    LEASES,
    CYCLES,
    CYCLE_REPORTS,
    SERIES,
    GAPS,
    ANOMALIES,
    VERDICTS,
    BACKFILLS,
    ACKS,
    ARCHIVE,
    AUDIT_LOG,
    REQUESTS,
)


async def ensure_indexes(database: Database) -> list[str]:
    """Idempotent; returns ``collection.index`` names that now exist."""
    made: list[str] = []
    existing = set(await database.db.list_collection_names())
    for name in (
        LEASES,
        FENCES,
        CYCLES,
        CYCLE_REPORTS,
        SERIES,
        GAPS,
        ANOMALIES,
        VERDICTS,
        BACKFILLS,
        ACKS,
        ARCHIVE,
        AUDIT_LOG,
        REQUESTS,
    ):
        if name not in existing:
            try:
                await database.db.create_collection(name)
            except Exception as exc:
                if "already exists" not in str(exc):
                    raise
        for index in INDEXES.get(name, []):
            created = await database.db[name].create_indexes([index])
            made.append(f"{name}.{created[0]}")
    return made


async def ensure_candle_index(database: Database, collection: str) -> str:
    name = await database.db[collection].create_index(
        [("symbol", ASCENDING), ("timestamp", ASCENDING)], name="symbol_timestamp"
    )
    return f"{collection}.{name}"


async def ensure_time_index(database: Database, collection: str) -> str:
    """A ``{timestamp: 1}`` index: lets time-range queries read the window's tail of
    every symbol sharing ``collection`` (see MongoCandleStore.read_many)."""
    name = await database.db[collection].create_index([("timestamp", ASCENDING)], name="timestamp")
    return f"{collection}.{name}"


class TimeIndexes:
    """Which candle collections have a ``{timestamp: 1}`` index, looked up once each.

    A collection whose index is added after the first lookup is treated as
    unindexed until the process restarts (reads stay correct, only costlier).
    """

    def __init__(self, database: Database) -> None:
        self._db = database.db
        self._known: dict[str, bool] = {}

    async def has(self, collection: str) -> bool:
        known = self._known.get(collection)
        if known is None:
            info = await self._db[collection].index_information()
            known = any(spec.get("key") == [("timestamp", 1)] for spec in info.values())
            self._known[collection] = known
        return known
