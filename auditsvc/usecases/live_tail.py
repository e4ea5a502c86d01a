"""The live tail: while this replica leads, it follows each configured series'
newest candle, stores the series' live verdict whenever its state changes
(LIVE, LATE, NO_DATA; see :mod:`auditsvc.domain.series_state`), and confirms
every verdict at once with one heartbeat, so every replica's StreamHealthScores
and ListHealthScores see a stall within seconds and can date each answer
(:mod:`auditsvc.domain.verdict`).

Guarantees:

* Only the leader writes, and every write is fenced at the term's epoch; when
  the term ends the tail is cancelled. A new leader starts tailing within
  ``_IDLE_POLL`` seconds (well under one heartbeat) of taking office.
* Take-office loses no insert: in change-stream mode the stream is open before
  the snapshot of each series' newest candle is read, so a candle inserted at
  any moment is in one or the other (the newer of both wins); in poll mode
  every poll reads what is newer than the snapshot.
* The tail writes only the live fields of a series (state, last candle, late
  candles, when observed), never a cycle's; a cycle never writes them while
  the tail runs. A confirmation (``LiveStore.confirm``, at most
  ``LiveSettings.heartbeat`` apart) is stored only after every state change
  judged at its instant is stored, so a reader that sees it may date every
  stored verdict by it.
* LIVE means the newest due slot is present: a series whose newest candle
  follows a hole is LATE while the newest due slot lies in that hole.
* A pass that starts more than two heartbeats after the previous one (a frozen
  process) polls what arrived meanwhile before it judges, in either mode.
* A candle opening more than one slot + grace past now is never the series'
  newest (a hostile or mistyped date cannot hold a dead series LIVE); it is
  counted (``auditsvc_candles_ignored_total{reason="future"}``) and logged once
  per series.
* State changes found in one pass are stored together: up to ``_STORE_BATCH``
  series per fenced transaction (halved whenever a batch overruns the fence's
  time budget, doubled back after each batch that does not), written with one
  bulk write, so the lease lock is held briefly even when every series changes.
* A LATE series gets one stored score per further missed slot (freshness
  decays on time); the candle that ends the lateness stores LIVE at once.
* A candle arriving more than one slot after the previous newest stores the
  skipped slots as a gap marked ``detected_live``, keyed like the cycle's gaps
  (series + start) so the next cycle reconciles the same record; its backfill
  is requested by the next cycle's healing pass, by priority with every other gap.
* With content checks on, each candle's values come with it (the change event's
  document, the poll's projected read) and are judged as it arrives
  (usecases/live_content.py): findings and suspect horizons are stored in the
  pass's last fenced batch, the one that confirms, never a transaction per candle.

Modes (LIVE_MODE): ``change_stream`` watches the candle collections;
``poll`` queries each candle collection every LIVE_POLL_INTERVAL seconds, one
query per collection however many symbols share it; ``auto`` picks change
streams where the deployment supports them, else polls; ``off`` disables the
tail. A failed change stream falls back to polling (logged).

Limits: the state follows the newest candle only; an out-of-order insert can
reveal a gap that is not one, which the next cycle removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from auditsvc.domain.candle import Candle
from auditsvc.domain.errors import Cancelled, Fenced, NotLeader, Unavailable
from auditsvc.domain.poll_plan import plan_poll
from auditsvc.domain.records import AnomalyRecord, GapRecord, LiveVerdict
from auditsvc.domain.series_state import (
    LiveState,
    SeriesState,
    first_missing_due_ms,
    must_store,
    next_change_ms,
    revealed_gap,
    series_state,
)
from auditsvc.domain.timeframes import Timeframe, parse_timeframe, settled_end
from auditsvc.domain.values import Gap
from auditsvc.leadership.term import Leadership, Term
from auditsvc.ops.clock import Clock
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.metrics import Metrics
from auditsvc.ops.settings import AuditSettings, LiveSettings
from auditsvc.storage.interfaces import CandleFeed, Fence, LiveStore
from auditsvc.usecases.fill_watch import FillWatch
from auditsvc.usecases.live_content import LiveContent

log = logging.getLogger(__name__)

_IDLE_POLL = 0.2
_MIN_SLEEP = 0.01
_STORE_BATCH = 50
Key = tuple[str, str]


class LiveTail:
    def __init__(
        self,
        audit: AuditSettings,
        live: LiveSettings,
        clock: Clock,
        feed: CandleFeed,
        store: LiveStore,
        fence: Fence,
        leadership: Leadership,
        metrics: Metrics,
        failpoints: Failpoints | None = None,
        fills: FillWatch | None = None,
        content: LiveContent | None = None,
    ) -> None:
        self._audit = audit
        self._live = live
        self._clock = clock
        self._feed = feed
        self._store = store
        self._fence = fence
        self._leadership = leadership
        self._metrics = metrics
        self._failpoints = failpoints or Failpoints()
        # Requested gaps found whole are FILLED within a poll (usecases/fill_watch.py).
        self._fills = fills
        # Candle content checks on each arriving candle (usecases/live_content.py).
        self._content = content
        self._grace = round(audit.ingest_grace * 1000)
        self._interval = live.poll_interval
        self._series: dict[Key, Timeframe] = {
            (sym, tf): parse_timeframe(tf) for sym in audit.symbols for tf in audit.timeframes
        }
        # collection -> {symbol: key}; symbols sharing a collection share one query.
        self._collections: dict[str, dict[str, Key]] = {}
        for sym, tf in self._series:
            coll = audit.collection_for(sym, tf)
            self._collections.setdefault(coll, {})[sym] = (sym, tf)
        self._newest: dict[Key, int | None] = {}
        self._stored: dict[Key, LiveState] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batch = _STORE_BATCH
        # Monotonic time of the last stored confirmation (None: none this term).
        self._confirmed_at: float | None = None
        # The slots the last out-of-order-free candle skipped, by series, while the
        # newest of them may still be due (see _state).
        self._holes: dict[Key, Gap] = {}
        # Monotonic time of the last pass (a longer pause: catch up before judging).
        self._last_pass: float | None = None
        # Future-dated candles already counted, by series (logged once per series).
        self._future_seen: dict[Key, set[int]] = {}
        self.mode = "off"

    def start(self) -> None:
        if self._task is None and self._live.mode != "off":
            self._task = asyncio.create_task(self._run(), name="live-tail")

    async def stop(self) -> None:
        """Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            term = self._leadership.term()
            if term is None:
                await asyncio.sleep(_IDLE_POLL)
                continue
            try:
                async with term.guard():
                    await self._lead(term)
            except Cancelled:
                log.info("live tail stopped: leadership ended", extra={"epoch": term.epoch})
            except Exception as exc:
                self._metrics.live_tail_up.set(0)
                self._metrics.live_tail_restarts.labels(type(exc).__name__).inc()
                log.warning(
                    "live tail failed; restarting",
                    extra={"reason": f"{type(exc).__name__}: {exc}"[:300]},
                )
                await asyncio.sleep(self._interval)
            finally:
                self._confirmed_at = None

    async def _lead(self, term: Term) -> None:
        mode = await self._choose_mode()
        # What an earlier term of this process saw is stale: start from nothing, so
        # a candle seen before the snapshot reveals no gap against an old newest.
        self._newest.clear()
        self._holes.clear()
        self._last_pass = None
        watcher: asyncio.Task[None] | None = None
        fills: asyncio.Task[None] | None = None
        try:
            if mode == "change_stream":
                opened = asyncio.Event()
                watcher = asyncio.create_task(
                    self._consume_stream(term.epoch, opened), name="live-watch"
                )
                # The stream first, then the snapshot: a candle inserted in between is
                # in the stream, one inserted before is in the snapshot.
                opening = asyncio.ensure_future(opened.wait())
                try:
                    await asyncio.wait((opening, watcher), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    opening.cancel()  # the stream failed first: the loop below polls
            await self._snapshot()
            await self._failpoints.reach("live.take_office")
            if self._fills is not None:
                # Beside the passes, on its own cadence: a pass and its sleep last
                # up to a heartbeat, and a fill is to be seen within 1.5 s.
                fills = asyncio.create_task(self._fills.run(term.epoch), name="live-fills")
            while True:
                if watcher is not None and watcher.done():
                    exc = watcher.exception()
                    reason = "it ended" if exc is None else f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "candle change stream failed; polling instead",
                        extra={"reason": reason[:300]},
                    )
                    watcher = None
                    self._set_mode("poll")
                if watcher is None or self._paused():
                    # A pass long after the last one (a frozen process, a starved
                    # loop) reads what arrived meanwhile before judging, or a stream
                    # still delivering it would make every series look LATE.
                    await self._poll(term.epoch)
                if self._content is not None:
                    await self._content.check_aggregates(self._clock.now_ms())
                await self._evaluate(term.epoch)
                self._last_pass = self._clock.monotonic()
                await self._sleep_until_due()
        finally:
            self._metrics.live_tail_up.set(0)
            for task in (watcher, fills):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    def _paused(self) -> bool:
        """Whether the last pass was more than two heartbeats ago."""
        limit = 2 * max(self._interval, self._live.heartbeat)
        return self._last_pass is not None and self._clock.monotonic() - self._last_pass > limit

    async def _snapshot(self) -> None:
        """Each series' newest candle and stored verdict, as the term begins; the two
        reads run side by side (at 30,000 series each takes seconds)."""
        stored, _ = await asyncio.gather(
            self._store.stored_scores(list(self._series)), self._read_newest()
        )
        self._stored.clear()
        if self._content is not None:
            self._content.begin_term(stored)
        for key, r in stored.items():
            if r.state is not None:
                self._stored[key] = LiveState(r.state, r.last_candle_ms, r.late_candles)

    async def _read_newest(self) -> None:
        for coll, members in self._collections.items():
            # A live series' newest candle opens within its last two slots + grace.
            slot = max(self._series[k].nominal_ms for k in members.values())
            since = self._clock.now_ms() - 2 * slot - self._grace
            newest = await self._feed.newest(coll, list(members), since_ms=since)
            # Judged against the clock after the read: a slow read must not make
            # the candles inserted meanwhile look dated in the future.
            now = self._clock.now_ms()
            for sym, key in members.items():
                t = newest.get(sym)
                if t is not None and self._in_future(key, t, now):
                    # Future-dated: the series' newest is the newest candle not past
                    # the bound, read once more for this symbol alone.
                    bound = now + self._series[key].nominal_ms + self._grace
                    t = (await self._feed.newest(coll, [sym], below_ms=bound)).get(sym)
                seen = self._newest.get(key)
                self._newest[key] = t if seen is None else max(seen, t or seen)

    async def _choose_mode(self) -> str:
        mode = self._live.mode
        if mode == "auto":
            supported = await self._feed.change_streams_supported(list(self._collections))
            mode = "change_stream" if supported else "poll"
        self._set_mode(mode)
        return mode

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        for name in ("change_stream", "poll"):
            self._metrics.live_mode.labels(name).set(1 if name == mode else 0)
        log.info("live tail mode", extra={"mode": mode, "configured": self._live.mode})

    async def _sleep_until_due(self) -> None:
        """Until the next poll, or earlier when some series' state is due to change."""
        now = self._clock.now_ms()
        # The next confirmation is due within one heartbeat, whatever the mode.
        wait = min(self._interval, self._live.heartbeat)
        for key, tf in self._series.items():
            due = next_change_ms(tf, self._newest.get(key), now, self._grace)
            if due is not None:
                wait = min(wait, (due - now) / 1000)
        content_due = None if self._content is None else self._content.next_due_ms(now)
        if content_due is not None:
            wait = min(wait, (content_due - now) / 1000)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(wait, _MIN_SLEEP))

    async def _poll(self, epoch: int) -> None:
        for coll, members in self._collections.items():
            slot = max(self._series[k].nominal_ms for k in members.values())
            p = plan_poll(
                {sym: self._newest.get(key) for sym, key in members.items()}, slot, self._grace
            )
            for sym, t, candle in await self._feed.poll(coll, p.floor_ms, p.recent, p.lagging):
                if sym in members:
                    await self._seen(members[sym], t, epoch, candle)

    async def _consume_stream(self, epoch: int, opened: asyncio.Event) -> None:
        async for coll, sym, t, candle in self._feed.watch(list(self._collections), opened):
            key = self._collections.get(coll, {}).get(sym)
            if key is not None and await self._seen(key, t, epoch, candle, streamed=True):
                self._wake.set()

    async def _seen(
        self, key: Key, t: int, epoch: int, candle: Candle | None = None, *, streamed: bool = False
    ) -> bool:
        """Records a candle; True when it is newer than the newest known, or its
        content left work for the next pass.

        Its content is judged once: a poll re-reads candles it has seen (the range
        after its floor), so only a change event judges a candle that is not the
        newest (an out-of-order insert, a replaced candle), and a future-dated
        one is judged when first met."""
        tf = self._series[key]
        previous = self._newest.get(key)
        if previous is not None and t <= previous:
            return streamed and self._judge(key, candle, newest=False)
        first_sight = t not in self._future_seen.get(key, ())
        if self._in_future(key, t, self._clock.now_ms()):
            return first_sight and self._judge(key, candle, newest=False)
        self._newest[key] = t
        gap = revealed_gap(tf, previous, t)
        if gap is not None:
            self._holes[key] = gap
            await self._store_gap(key, tf, gap, epoch)
        self._judge(key, candle, newest=True)
        return True

    def _judge(self, key: Key, candle: Candle | None, *, newest: bool) -> bool:
        if self._content is None or candle is None:
            return False
        return self._content.arrived(key, candle, self._clock.now_ms(), newest=newest)

    def _in_future(self, key: Key, t: int, now: int) -> bool:
        """Whether a candle opens more than one slot + grace past ``now``; counted once
        per candle (a poll meets it again every time) and logged once per series."""
        tf = self._series[key]
        if t <= now + tf.nominal_ms + self._grace:
            return False
        ignored = self._future_seen.setdefault(key, set())
        if t not in ignored:
            first = not ignored
            ignored.add(t)
            self._metrics.candles_ignored.labels("future").inc()
            if first:
                log.warning(
                    "candle dated in the future ignored for liveness",
                    extra={"symbol": key[0], "timeframe": key[1], "open_ms": t, "now_ms": now},
                )
        return True

    async def _store_gap(self, key: Key, tf: Timeframe, gap: Gap, epoch: int) -> None:
        # Requested by the next cycle's healing pass, by priority with every other gap.
        record = GapRecord(
            key[0],
            key[1],
            gap.start_ms,
            gap.end_ms,
            gap.missing_candles,
            gap.severity,
            self._clock.now_ms(),
            detected_live=True,
        )
        await self._fence.write_fenced(epoch, lambda s: self._store.save_live_gap(record, epoch, s))
        self._metrics.gaps_detected.labels(*key).inc()
        log.info(
            "live gap",
            extra={"symbol": key[0], "timeframe": key[1], "missing": gap.missing_candles},
        )

    async def _evaluate(self, epoch: int) -> None:
        """Judges every series now, stores the changes, then confirms them all."""
        now = self._clock.now_ms()
        counts: Counter[SeriesState] = Counter()
        changed: list[tuple[Key, LiveState, LiveState | None]] = []
        for key, tf in self._series.items():
            current = self._state(key, tf, now)
            counts[current.state] += 1
            previous = self._stored.get(key)
            if must_store(previous, current):
                changed.append((key, current, previous))
        for state in (SeriesState.LIVE, SeriesState.LATE, SeriesState.NO_DATA):
            self._metrics.series_state.labels(state.value).set(counts[state])
        if changed:
            # Between the judgement and the store: where a race with a cycle would land.
            await self._failpoints.reach("live.before_store")
        # One fenced transaction per batch, not per series: a new leader storing the
        # state of every series, or many series going late at once, costs a few
        # round trips instead of one transaction each. The last batch carries the
        # confirmation; a pass with no change confirms alone, once per heartbeat.
        due = self._confirmed_at is None or (
            self._clock.monotonic() - self._confirmed_at >= self._live.heartbeat * 0.9
        )
        content = self._content is not None and self._content.due(now)
        if not changed and not due and not content:
            return
        first = 0
        while True:
            batch = changed[first : first + self._batch]
            last = first + len(batch) >= len(changed)
            try:
                await self._store_states(batch, now, epoch, confirm=last)
            except (Fenced, NotLeader):
                raise
            except Unavailable:
                if len(batch) <= 1:
                    raise
                # Over the fence's time budget (a slow or loaded database): halve the
                # batch; what was not stored is still due and goes in the next pass,
                # and nothing is confirmed until it is.
                self._batch = max(1, len(batch) // 2)
                log.warning("live tail: smaller state batches", extra={"batch": self._batch})
                return
            # A batch within budget: grow back, so one slow moment does not shrink
            # the batch for good.
            self._batch = min(_STORE_BATCH, self._batch * 2)
            for key, current, previous in batch:
                self._stored[key] = current
                self._observe(key, current, previous, now)
            first += len(batch)
            if last:
                break
        self._confirmed_at = self._clock.monotonic()
        self._metrics.live_tail_up.set(1)

    def _state(self, key: Key, tf: Timeframe, now: int) -> LiveState:
        """The series' state now; LATE while the newest due slot lies in the hole
        the series' last candle revealed (a feed back from an outage has a newer
        candle, but the slot a gate relies on is missing until that candle is due)."""
        current = series_state(tf, self._newest.get(key), now, self._grace)
        hole = self._holes.get(key)
        if hole is None or current.state is not SeriesState.LIVE:
            return current
        end = settled_end(tf, now, self._grace)
        if end > hole.end_ms:
            del self._holes[key]  # the candle after the hole is due: LIVE stands
            return current
        if end <= hole.start_ms:
            return current
        return LiveState(
            SeriesState.LATE, tf.shift(hole.start_ms, -1), tf.count_slots(hole.start_ms, end)
        )

    def _observe(self, key: Key, current: LiveState, previous: LiveState | None, now: int) -> None:
        log.info(
            "series state",
            extra={
                "symbol": key[0],
                "timeframe": key[1],
                "state": current.state.value,
                "late_candles": current.late_candles,
            },
        )
        due = first_missing_due_ms(self._series[key], current, self._grace)
        newly_late = current.state is SeriesState.LATE and (
            previous is None or previous.state is not SeriesState.LATE
        )
        if newly_late and due is not None:
            self._metrics.live_detection_seconds.observe(max(0, now - due) / 1000)

    async def _store_states(
        self,
        batch: list[tuple[Key, LiveState, LiveState | None]],
        now: int,
        epoch: int,
        *,
        confirm: bool,
    ) -> None:
        verdicts = [LiveVerdict(key[0], key[1], live, now) for key, live, _ in batch]
        # The last batch of a pass carries the content findings (and the horizons).
        content = self._content.take(now) if self._content is not None and confirm else None

        async def work(session: object) -> list[AnomalyRecord]:
            await self._store.save_verdicts(verdicts, epoch, session)
            new = []
            if content:
                assert self._content is not None
                new = await self._content.write(content, epoch, session)
            if confirm:
                await self._store.confirm(epoch, now, self.mode, session)
            return new

        new = await self._fence.write_fenced(epoch, work)
        if content is not None and self._content is not None:
            self._content.stored(content, new)
