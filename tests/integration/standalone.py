"""The real Auditor on real stores, leading alone (epoch 0), for tests that drive
cycles in-process without an App."""

from __future__ import annotations

from typing import Any

from auditsvc.leadership.term import Standalone
from auditsvc.ops.clock import Clock, SystemClock
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import (
    MongoBackfillStore,
    MongoCandleStore,
    MongoLeadershipStore,
    MongoStateStore,
)
from auditsvc.storage.mongo.ack_store import MongoAckStore
from auditsvc.storage.mongo.anomaly_store import MongoAnomalyStore
from auditsvc.storage.mongo.candle_values import CandleFields
from auditsvc.storage.mongo.database import Database
from auditsvc.storage.mongo.settled_store import MongoSettledStore
from auditsvc.usecases.auditing import Auditor
from auditsvc.usecases.content_check import ContentOptions


def standalone_auditor(
    settings: Settings,
    database: Database,
    candles: MongoCandleStore | None = None,
    *,
    state: MongoStateStore | None = None,
    incremental: bool = True,
    clock: Clock | None = None,
    acks: MongoAckStore | None = None,
    content: bool = False,
    fence: Any = None,
) -> Auditor:
    """Reads through ``candles`` and stores through ``state`` (the plain stores when
    None); ``incremental``: default-window cycles go through the sweep (settled
    records), else every series is audited on its own; ``content``: the candle
    content checks as the settings configure them (findings in audit_anomalies);
    ``fence``: instead of the real one."""
    clock = clock or SystemClock()
    c = settings.content
    fields = CandleFields(
        c.close_time_field, c.trades_field, c.taker_buy_volume_field, c.quote_volume_field
    )
    options = ContentOptions(c.anomaly_config(), c.suspect_slots, settings.audit.timeframes)
    return Auditor(
        settings.audit,
        settings.backfill,
        settings.server.replica_id,
        clock,
        candles or MongoCandleStore(database, settings.audit.collection_template, None, fields),
        state or MongoStateStore(database),
        MongoBackfillStore(database),
        fence or MongoLeadershipStore(database, settings.election.name, settings.server.replica_id),
        Standalone(settings.server.replica_id, "127.0.0.1:0", clock.now_ms()),
        Metrics(),
        settled=MongoSettledStore(database) if incremental else None,
        acks=acks,
        content=options if content else None,
        anomalies=MongoAnomalyStore(database) if content else None,
    )
