"""The demo data writer of `make run` that honours backfill requests: a
background thread that, a few seconds after the service requests a gap,
writes the missing candles and closes the request, as a real writer would.

With it a newcomer can watch a gap go OPEN -> BACKFILL_REQUESTED -> FILLED in
``auditctl gaps --state all`` (the FILLED state comes with the next cycle).

Guarantees: it writes only slots of the request's range that hold no candle
(never a duplicate), and closes a request only while it is still open
(``open: false``, ``status: "done"``); ``stop()`` is idempotent and joins the
thread. Limits: a developer convenience with synchronous pymongo on its own
thread, at most ``BATCH`` requests per pass; not for production.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient

from auditsvc.devtools.demo import demo_candle, demo_price
from auditsvc.domain.timeframes import parse_timeframe
from auditsvc.ops.settings import AuditSettings, MongoSettings

log = logging.getLogger(__name__)

REQUESTS = "backfill_requests"
# A writer is never instant: the request stays visible as BACKFILL_REQUESTED a while.
DELAY_S = 5.0
BATCH = 50
_TICK = 1.0


class DemoBackfiller:
    """Fills and closes the open backfill requests older than ``delay_s``."""

    def __init__(
        self,
        mongo: MongoSettings,
        audit: AuditSettings,
        clock: Callable[[], float] = time.time,
        client: Any = None,
        delay_s: float = DELAY_S,
    ) -> None:
        self._database = mongo.database
        self._audit = audit
        self._clock = clock
        self._delay_s = delay_s
        self._client: Any = client or MongoClient(
            mongo.uri, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        self._own_client = client is None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="demo-backfill", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Idempotent; returns once the thread has ended."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)
        if self._own_client:
            self._client.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # a dev database restarting must not end the demo
                log.warning("demo backfill: %s: %s", type(exc).__name__, exc)
            self._stopping.wait(_TICK)

    def tick(self) -> int:
        """One pass: fills and closes each due request; returns the candles written."""
        db = self._client[self._database]
        due = dt.datetime.fromtimestamp(self._clock() - self._delay_s, dt.UTC)
        written = 0
        for req in db[REQUESTS].find({"open": True, "created_at": {"$lte": due}}).limit(BATCH):
            written += self._fill(db, req)
            db[REQUESTS].update_one(
                {"_id": req["_id"], "open": True},
                {"$set": {"open": False, "status": "done", "closed_by": "demo-backfill"}},
            )
        return written

    def _fill(self, db: Any, req: dict[str, Any]) -> int:
        symbol, tf = req["symbol"], parse_timeframe(req["timeframe"])
        if symbol not in self._audit.symbols or tf.name not in self._audit.timeframes:
            return 0
        coll = db[self._audit.collection_for(symbol, tf.name)]
        start, end = _ms(req["start_time"]), _ms(req["end_time"])
        held = {
            _ms(d["timestamp"])
            for d in coll.find(
                {
                    "symbol": symbol,
                    "timestamp": {"$gte": req["start_time"], "$lt": req["end_time"]},
                },
                {"timestamp": 1},
            )
        }
        missing = [t for t in tf.iter_opens(start, end) if t not in held]
        if missing:
            price = demo_price(self._audit.symbols, symbol)
            coll.insert_many([demo_candle(symbol, tf.name, t, price) for t in missing])
        return len(missing)


def _ms(value: dt.datetime) -> int:
    return round(value.timestamp() * 1000)
