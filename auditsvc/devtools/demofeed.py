"""The demo feed of `make run`: a background thread that writes each demo series'
candle as its slot closes, as an exchange kline writer would, so the live tail
shows LIVE series, and a paused symbol turns LATE.

Pausing is a file: ``<data dir>/paused-feeds`` lists one symbol per line
(``auditsvc dev --pause-feed SYMBOL`` / ``--resume-feed SYMBOL`` edit it), read
on every tick, so a second terminal can pause a running stack without any
channel into it. A resumed symbol gets only its newest closed slot, so the
slots it missed show up as a live gap, as after a real feed outage.

Guarantees: at most one candle per slot per series from this feed (it tracks the
newest it wrote, starting from the newest in the collection); at start it fills
at most ``MAX_CATCH_UP`` slots since the seeded data; ``stop()`` is idempotent
and joins the thread. Limits: a developer convenience with synchronous pymongo
on its own thread; one feed per database, not for production.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from auditsvc.devtools.demo import demo_candle, demo_price
from auditsvc.domain.timeframes import Timeframe, parse_timeframe
from auditsvc.ops.settings import AuditSettings, MongoSettings

log = logging.getLogger(__name__)

PAUSE_FILE = "paused-feeds"
MAX_CATCH_UP = 2000
_TICK = 0.2


def paused(data_dir: Path) -> set[str]:
    """The symbols listed in ``data_dir/paused-feeds`` (none when it does not exist)."""
    try:
        text = (data_dir / PAUSE_FILE).read_text()
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def set_paused(data_dir: Path, symbol: str, pause: bool) -> set[str]:
    """Adds (``pause``) or removes ``symbol`` in the pause file; returns the new set."""
    symbols = paused(data_dir)
    if pause:
        symbols.add(symbol)
    else:
        symbols.discard(symbol)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Replace, not rewrite in place: the feed thread never reads half a file.
    tmp = data_dir / f".{PAUSE_FILE}.tmp"
    tmp.write_text("".join(f"{s}\n" for s in sorted(symbols)))
    tmp.replace(data_dir / PAUSE_FILE)
    return symbols


def due_opens(
    tf: Timeframe, newest_ms: int | None, now_ms: int, limit: int = MAX_CATCH_UP
) -> list[int]:
    """Opens of the slots closed by ``now_ms`` after ``newest_ms``, the last ``limit``
    at most (only the newest closed slot when ``newest_ms`` is None)."""
    forming = tf.floor(now_ms)
    if newest_ms is None:
        limit = 1
        newest_ms = forming - (limit + 1) * (tf.fixed_ms or tf.nominal_ms)
    opens = list(tf.iter_opens(tf.next_open(newest_ms), forming))
    return opens[-limit:] if limit else []


class DemoFeed:
    """Feeds every (AUDIT_SYMBOLS x AUDIT_TIMEFRAMES) series until stopped."""

    def __init__(
        self,
        mongo: MongoSettings,
        audit: AuditSettings,
        data_dir: Path,
        clock: Callable[[], float] = time.time,
        client: Any = None,
    ) -> None:
        self._database = mongo.database
        self._audit = audit
        self._data_dir = data_dir
        self._clock = clock
        self._client: Any = client or MongoClient(
            mongo.uri, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        self._own_client = client is None
        self._series = [
            (sym, parse_timeframe(tf), demo_price(audit.symbols, sym))
            for sym in audit.symbols
            for tf in audit.timeframes
        ]
        self._newest: dict[tuple[str, str], int | None] = {}
        self._was_paused: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="demo-feed", daemon=True)
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
                log.warning("demo feed: %s: %s", type(exc).__name__, exc)
            self._stopping.wait(_TICK)

    def tick(self) -> int:
        """One pass: writes every due candle of every unpaused series; returns how many."""
        now = round(self._clock() * 1000)
        stopped = paused(self._data_dir)
        db = self._client[self._database]
        written = 0
        for sym, tf, price in self._series:
            key = (sym, tf.name)
            if sym in stopped:
                self._was_paused.add(sym)
                continue
            coll = db[self._audit.collection_for(sym, tf.name)]
            if key not in self._newest:
                self._newest[key] = _newest_in(coll, sym)
            newest = self._newest[key]
            # Back from a pause: only the newest slot, so the outage is a gap to see.
            opens = due_opens(tf, newest, now, 1 if sym in self._was_paused else MAX_CATCH_UP)
            if opens:
                coll.insert_many([demo_candle(sym, tf.name, t, price) for t in opens])
                self._newest[key] = opens[-1]
                written += len(opens)
        self._was_paused &= stopped
        return written


def _newest_in(coll: Any, symbol: str) -> int | None:
    doc = coll.find_one({"symbol": symbol}, {"timestamp": 1}, sort=[("timestamp", -1)])
    if doc is None:
        return None
    opened: datetime = doc["timestamp"]
    return round(opened.timestamp() * 1000)
