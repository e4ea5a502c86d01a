"""Leader election over one MongoDB lease document, after client-go's leaderelection.

Every replica runs a ``LeaderElector``. Every ``retry_period`` (the heartbeat)
it calls ``LeaseStore.try_acquire``: the holder renews, the others get
None until the lease lapses, and the first to ask after that takes it over.

Guarantees, and what they rest on:

* **Atomic conditional upsert.** Acquire, renew and take-over are one
  ``find_one_and_update`` on one document, so the database decides who holds
  the lease; two replicas can never both be told they acquired it.
* **The database's clock.** Expiry is judged with ``$$NOW`` inside that
  update. No replica compares its own wall time with lease times, so wall
  clock *offset* between replicas (or against the database) does not matter.
  Locally only the injected ``Clock.monotonic()`` is used, to measure
  durations.
* **Epoch fencing.** Every new term (take-over, or re-taking our own lapsed
  or released lease) gets ``epoch + 1``; a renewal keeps the epoch. Mutating
  work runs inside ``Term.guard()`` and writes through the fence with the
  term's epoch, so a write from a deposed leader is refused by the database
  even if it was already on the wire. Epochs only grow while the lease
  document exists: deleting it (by hand or by a TTL index) restarts them at 1.
* **Renew deadline < lease duration.** The leader notes the monotonic time at
  which it *sent* each successful renewal (the database extended the lease to
  at least that moment plus ``lease_duration``). If no renewal has succeeded
  for ``renew_deadline`` seconds a watchdog task ends the term at once —
  cancelling guarded work — without waiting for a database call that may be
  hung until the socket timeout. Each call is also bounded by
  ``retry_period``. Because ``renew_deadline < lease_duration``, a leader
  steps down before anyone else can acquire, assuming the local monotonic
  clock and the database clock run at nearly the same *rate* (bounded drift
  over one lease duration, not synchronised offset) and that the event loop
  is not stalled for longer than ``lease_duration - renew_deadline``.

Two parts live in units of their own, with their guarantees in their
docstrings: the renew-deadline watchdog (``leadership.watchdog``) and what a
follower knows of the leader (``leadership.observer``). This module runs the
rounds and the terms.

On losing the database: the leader counts every failed or timed-out renewal
(``renew_failures``) and steps down at the renew deadline; nobody promotes
itself without a successful acquire, so during an outage there is no leader
rather than two. A follower keeps the last leader it saw until that lease would
have expired by its own monotonic clock, then reports no known leader
(``last_known_address() == ''``); ``leader()`` asks the database and raises.

On shutdown ``stop()`` ends the term first (guarded work is cancelled), then
releases the lease: the release expires it *now* but keeps the epoch, so a
follower takes over within one heartbeat with ``epoch + 1``.

Limits: a process paused longer than ``lease_duration - renew_deadline`` (GC,
SIGSTOP, a frozen VM) can wake believing it still leads; guarded work is
cancelled when the watchdog runs, and only the fence stops writes already
issued. Without transactions the fence re-checks the lease before each batch,
which narrows that window but cannot close it. A timed-out call may still land
on the server later; at worst that renews or re-takes our own lease, which
delays a take-over by one lease duration but never creates a second leader.
Callbacks run synchronously on the event loop and must not block. ``stop()``
waits for an in-flight round (at most ``retry_period``) so that our release is
not overtaken by our own renewal, then bounds the release (and ``leader()``'s
read) by ``call_timeout``, a heartbeat but at least 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from auditsvc.domain.errors import Unavailable
from auditsvc.domain.records import LeaderInfo
from auditsvc.domain.values import Role
from auditsvc.leadership.observer import LeaderObserver
from auditsvc.leadership.term import Term
from auditsvc.leadership.watchdog import RenewWatchdog
from auditsvc.ops.clock import Clock
from auditsvc.ops.metrics import Metrics
from auditsvc.storage.interfaces import Lease, LeaseStore

if TYPE_CHECKING:
    from auditsvc.ops.settings import Settings

log = logging.getLogger(__name__)

NO_LEADER = LeaderInfo(
    leader_id="", leader_address="", epoch=0, is_self=False, elected_ms=None, expires_ms=None
)


@dataclass(frozen=True)
class ElectionConfig:
    """Timings in seconds; ``lease_duration > renew_deadline > retry_period > 0``."""

    lease_duration: float
    renew_deadline: float
    retry_period: float
    replica_id: str
    address: str

    def __post_init__(self) -> None:
        for name in ("lease_duration", "renew_deadline", "retry_period"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: must be a finite number of seconds > 0, got {value!r}")
        if not self.renew_deadline > self.retry_period:
            raise ValueError(
                f"renew_deadline: must be above retry_period "
                f"({self.renew_deadline:g} <= {self.retry_period:g})"
            )
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration: must be above renew_deadline "
                f"({self.lease_duration:g} <= {self.renew_deadline:g}); otherwise another "
                "replica could acquire before this one steps down"
            )
        if not self.replica_id:
            raise ValueError("replica_id: must not be empty")

    @classmethod
    def from_settings(cls, settings: Settings) -> ElectionConfig:
        return cls(
            lease_duration=settings.election.timeout,
            renew_deadline=settings.election.renew_deadline,
            retry_period=settings.election.heartbeat_interval,
            replica_id=settings.server.replica_id,
            address=settings.server.advertise_address,
        )

    @property
    def call_timeout(self) -> float:
        """Bound on a release or a read of the lease: a heartbeat, but never under 1 s."""
        return max(self.retry_period, 1.0)

    @property
    def duration_ms(self) -> int:
        return max(1, round(self.lease_duration * 1000))


@dataclass(frozen=True)
class ElectionCallbacks:
    """Optional synchronous hooks; exceptions they raise are logged and ignored."""

    on_started_leading: Callable[[Term], None] | None = None
    # Called whenever a term ends: lease lost, renew deadline, shutdown.
    on_stopped_leading: Callable[[], None] | None = None
    # Called with the holder's id when the observed leader changes (ourselves too).
    on_new_leader: Callable[[str], None] | None = None


class LeaderElector:
    """Implements ``auditsvc.leadership.term.Leadership`` with a MongoDB lease."""

    def __init__(
        self,
        config: ElectionConfig,
        lease_store: LeaseStore,
        clock: Clock,
        metrics: Metrics,
        callbacks: ElectionCallbacks | None = None,
    ) -> None:
        self._cfg = config
        self._store = lease_store
        self._clock = clock
        self._metrics = metrics
        self._callbacks = callbacks if callbacks is not None else ElectionCallbacks()
        self._term: Term | None = None
        # Epoch of the lease the store last granted us; None once we know it is gone.
        self._granted_epoch: int | None = None
        # Follower observation: the last live leader seen, and until when.
        self._seen = LeaderObserver(clock, metrics, config.replica_id, lease_store.holder)
        # Ends the term at the renew deadline, without waiting for a hung call.
        self._watchdog = RenewWatchdog(clock, config.renew_deadline)
        self._failures = 0
        self._stopping = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._loop_done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_lock = asyncio.Lock()
        self._pending: asyncio.Future[Lease | None] | None = None
        self._pending_sent = 0.0

    # -- Leadership protocol -------------------------------------------------

    @property
    def config(self) -> ElectionConfig:
        return self._cfg

    @property
    def role(self) -> Role:
        return Role.LEADER if self.term() is not None else Role.FOLLOWER

    @property
    def epoch(self) -> int:
        term = self.term()
        return term.epoch if term is not None else self._seen.epoch

    def term(self) -> Term | None:
        term = self._term
        return term if term is not None and term.active else None

    async def leader(self) -> LeaderInfo:
        """The live lease holder as stored; leader_id '' when none. DB errors propagate."""
        try:
            # Bounded: GetLeader fails fast with the database down instead of
            # hanging until the client's deadline.
            lease = await asyncio.wait_for(self._store.read(), self._cfg.call_timeout)
        except TimeoutError:
            raise Unavailable("database unreachable: the lease could not be read") from None
        if lease is None or not lease.live:
            return NO_LEADER
        return LeaderInfo(
            leader_id=lease.name,
            leader_address=lease.address,
            epoch=lease.epoch,
            is_self=lease.holder == self._store.holder,
            elected_ms=lease.acquired_ms,
            expires_ms=lease.expires_ms,
        )

    def last_known_address(self) -> str:
        return self._seen.last_known_address()

    def last_seen_address(self) -> str:
        """The last leader's address ever observed, live or not ('' if none)."""
        return self._seen.last_seen_address()

    def known_leader(self) -> str:
        """The last observed live holder's id, '' once its lease would have expired."""
        return self._seen.known_leader()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Runs the election loop in a background task and returns at once (idempotent)."""
        if self._running:
            return
        self._claim()
        self._task = asyncio.create_task(self._loop(), name=f"elector-{self._cfg.replica_id}")

    async def elect_until_stopped(self) -> None:
        """Runs the election loop in the calling task until ``stop()`` or cancellation."""
        self._claim()
        await self._loop()

    @property
    def _running(self) -> bool:
        return self._loop_done is not None and not self._loop_done.is_set()

    def _claim(self) -> None:
        if self._stopping:
            raise RuntimeError("elector has been stopped")
        if self._running:
            raise RuntimeError("elector is already running")
        self._loop_done = asyncio.Event()

    async def _loop(self) -> None:
        assert self._loop_done is not None
        log.info(
            "leader election started",
            extra={"epoch": self.epoch, "replica_id": self._cfg.replica_id},
        )
        try:
            while not self._stopping:
                began = self._clock.monotonic()
                try:
                    await self._attempt(began)
                except Exception:
                    log.exception("election round failed", extra={"epoch": self.epoch})
                if self._stopping:
                    break
                delay = began + self._cfg.retry_period - self._clock.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self._step_down("election loop ended")
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            self._loop_done.set()

    async def stop(self, release: bool = True) -> None:
        """Ends the term (cancelling guarded work) and, with ``release``, frees the lease.

        Idempotent; concurrent callers all return once the first has finished.
        """
        async with self._stop_lock:
            if self._stopped:
                return
            self._stopping = True
            self._wake.set()
            self._step_down("shutting down", logging.INFO)
            # Let an in-flight round finish (bounded by retry_period) so that our
            # release is not overtaken by our own renewal.
            if self._loop_done is not None:
                await self._loop_done.wait()
            # asyncio.wait neither raises the tasks' outcome nor swallows our own cancellation.
            pending = {t for t in (self._task, *self._watchdog.dying) if t is not None}
            if pending:
                await asyncio.wait(pending)
            epoch = self._granted_epoch
            if release and epoch is not None:
                await self._release(epoch)
            self._stopped = True
            log.info("leader election stopped", extra={"epoch": self.epoch})

    async def __aenter__(self) -> LeaderElector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one round -----------------------------------------------------------

    async def _attempt(self, began: float) -> None:
        me = self._cfg
        # One acquire on the wire at a time: the driver cannot abandon a sent command,
        # so starting another each round would pile requests onto a slow server.
        if self._pending is not None and began - self._pending_sent > me.lease_duration:
            # Outlived any lease it could grant: give up on it and ask afresh.
            self._pending.cancel()
            self._pending = None
        if self._pending is None:
            self._pending_sent = began
            self._pending = asyncio.ensure_future(
                self._store.try_acquire(me.address, me.duration_ms)
            )
        try:
            lease = await asyncio.wait_for(asyncio.shield(self._pending), me.retry_period)
        except TimeoutError as exc:
            self._failed(exc, "acquire")  # still in flight; the next round awaits it
            return
        except Exception as exc:  # DB down: a failed renewal, never a promotion
            self._pending = None
            self._failed(exc, "acquire")
            return
        self._pending = None
        # Lease validity is measured from when the winning request was sent.
        began = self._pending_sent
        self._recovered()
        if lease is not None:
            self._granted_epoch = lease.epoch
            if self._stopping:
                return  # stop() releases it; never start a term while stopping
            self._watchdog.renewed(began)
            self._observe(lease, began)
            term = self.term()
            if term is None and self._clock.monotonic() - began >= self._cfg.renew_deadline:
                # A grant that arrived this late would start a term the watchdog
                # ends at once; the next round's fresh renewal starts it instead.
                return
            if term is None or term.epoch != lease.epoch:
                if term is not None:
                    self._step_down(f"lease re-acquired at a new epoch {lease.epoch}")
                if await self._take_office(lease):
                    self._start_term(lease.epoch)
            return
        self._granted_epoch = None
        self._step_down("lease is held by another replica")
        if self._stopping:
            return
        began_read = self._clock.monotonic()
        try:
            current = await asyncio.wait_for(self._store.read(), timeout=me.retry_period)
        except Exception as exc:
            self._failed(exc, "read")
            return
        if current is not None and current.live:
            self._observe(current, began_read)
        else:
            self._seen.lapsed()  # the next round may take it

    async def _take_office(self, lease: Lease) -> bool:
        """Readies the store for the new term's fenced writes (bounded); the next
        round tries again when it fails, since no term has started."""
        try:
            await asyncio.wait_for(self._store.take_office(lease), self._cfg.retry_period)
        except Exception as exc:
            self._failed(exc, "take office")
            return False
        return not self._stopping and self._granted_epoch == lease.epoch

    def _observe(self, lease: Lease, began: float) -> None:
        """Records a live lease; ``began`` is when the call that returned it was sent."""
        if self._seen.observe(lease, began):
            self._call("on_new_leader", self._callbacks.on_new_leader, lease.name)

    def _failed(self, exc: Exception, what: str) -> None:
        self._failures += 1
        leading = self.term() is not None
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "lease %s failed (%d in a row): %s",
            what,
            self._failures,
            repr(exc),
            extra={"epoch": self.epoch, "leading": leading},
        )
        if leading:
            self._metrics.renew_failures.inc()
            if self._watchdog.overdue():
                self._step_down(self._deadline_reason())

    def _recovered(self) -> None:
        if self._failures:
            log.info(
                "lease store reachable again after %d failures",
                self._failures,
                extra={"epoch": self.epoch},
            )
            self._failures = 0

    # -- terms ---------------------------------------------------------------

    def _start_term(self, epoch: int) -> None:
        term = Term(epoch)
        self._term = term
        self._metrics.transitions.labels("started").inc()
        self._metrics.set_leading(True)
        self._metrics.epoch.set(epoch)
        self._watchdog.arm(
            f"elector-watchdog-{self._cfg.replica_id}",
            lambda: self._step_down(self._deadline_reason()),
            lambda: self._term is term,
        )
        log.info("started leading", extra={"epoch": epoch})
        self._call("on_started_leading", self._callbacks.on_started_leading, term)

    def _deadline_reason(self) -> str:
        """Why the renew deadline passed, in the words a caller whose work it
        cancels needs: the database, not a lease internals' name."""
        d = self._cfg.renew_deadline
        if self._failures:
            return f"database unreachable: no lease renewal succeeded for {d:g}s"
        # No answer at all: a renewal still in flight when the database died, or
        # a database too loaded to answer; from here the two look the same.
        return f"database unreachable or too slow: no lease renewal answered within {d:g}s"

    def _step_down(self, reason: str, level: int = logging.WARNING) -> None:
        """Ends the current term, if any: synchronous, so nothing can delay it."""
        term = self._term
        if term is None:
            return
        self._term = None
        self._watchdog.disarm()
        term.end(reason)
        self._metrics.set_leading(False)
        self._metrics.transitions.labels("stopped").inc()
        log.log(level, "stopped leading: %s", reason, extra={"epoch": term.epoch})
        self._call("on_stopped_leading", self._callbacks.on_stopped_leading)

    async def _release(self, epoch: int) -> None:
        try:
            released = await asyncio.wait_for(
                self._store.release(epoch), timeout=self._cfg.call_timeout
            )
        except Exception as exc:
            log.warning(
                "lease release failed; it will expire on its own: %r", exc, extra={"epoch": epoch}
            )
            return
        self._granted_epoch = None
        if released:
            log.info("lease released", extra={"epoch": epoch})

    def _call(self, name: str, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("%s callback failed", name, extra={"epoch": self.epoch})
