"""Builds every part from Settings and runs them in one written-down order.

Start: logging → database client (lazy) → stores → leadership → use cases →
gRPC server (readiness NOT_SERVING) → two tasks: ``_prepare`` creates the
collections and indexes, then starts the live tail, the election and the
scheduler (no cycle can start before the indexes exist; RunAudit answers
UNAVAILABLE until then); ``_probe_database`` only keeps readiness in step with
the database. The tail and the scheduler act only while leading.

Stop (SIGTERM/SIGINT), in this order:
1. readiness NOT_SERVING, so Kubernetes stops routing new calls here;
2. the scheduler and the live tail stop, and leadership is released (lease expired now, epoch
   kept), so a follower takes over within one heartbeat;
3. open streams are told to finish with OK;
4. in-flight RPCs drain;
5. request work still running is stopped, the database client closes and
   ``serve_until_signalled`` returns (exit code 0).
All steps share one SHUTDOWN_GRACE budget, so a stalled database cannot hold the
exit up (see ``stop``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from contextlib import suppress
from wsgiref.simple_server import WSGIServer

from auditsvc.leadership.term import Leadership, Standalone
from auditsvc.ops.clock import Clock, SystemClock
from auditsvc.ops.failpoints import Failpoints
from auditsvc.ops.metrics import Metrics, serve_metrics
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo import (
    MongoBackfillStore,
    MongoCandleStore,
    MongoDuplicateStore,
    MongoLeadershipStore,
    MongoStateStore,
    connect,
)
from auditsvc.storage.mongo.ack_store import MongoAckStore
from auditsvc.storage.mongo.anomaly_store import MongoAnomalyStore
from auditsvc.storage.mongo.candle_values import CandleFields
from auditsvc.storage.mongo.database import detect_transactions, ensure_indexes
from auditsvc.storage.mongo.fence import MajorityUnavailable
from auditsvc.storage.mongo.live_store import (
    MongoCandleFeed,
    MongoLiveStore,
    MongoVerdictSource,
)
from auditsvc.storage.mongo.secret_store import deployment_secret
from auditsvc.storage.mongo.settled_store import MongoSettledStore
from auditsvc.transport.auth import AuthGate
from auditsvc.transport.forwarding import Forwarder, ForwardingGate
from auditsvc.transport.interceptors import CallInterceptor
from auditsvc.transport.server import ALL_METHODS, MUTATING, SERVICE_NAME, Server, tls
from auditsvc.transport.servicer import AuditServicer
from auditsvc.usecases.audit_service import AuditService
from auditsvc.usecases.auditing import Auditor
from auditsvc.usecases.content_check import ContentOptions
from auditsvc.usecases.dedupe import Deduplicator
from auditsvc.usecases.fill_watch import FillWatch
from auditsvc.usecases.live_content import LiveContent
from auditsvc.usecases.live_tail import LiveTail
from auditsvc.usecases.page_tokens import PageTokens
from auditsvc.usecases.scheduler import Scheduler
from auditsvc.usecases.verdicts import VerdictWatch

log = logging.getLogger(__name__)

_PROBE_MIN = 0.5
_PROBE_MAX = 10.0
# Least time any shutdown step gets, even when SHUTDOWN_GRACE is spent: enough to
# release the lease on a healthy database.
_STEP_FLOOR = 0.5


class App:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        failpoints: Failpoints | None = None,
    ) -> None:
        s = self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.database = connect(s.mongo.uri, s.mongo.database, s.mongo.timeout_ms)
        self.state = MongoStateStore(self.database, gap_retention_s=s.backfill.history_retention)
        # The lease, the fence and their gate: one object, one identity per process.
        self.fence = self.leases = MongoLeadershipStore(
            self.database,
            s.election.name,
            s.server.replica_id,
            call_timeout_s=max(s.election.heartbeat_interval, 1.0),
            # A batch may not outlive the renew deadline by much: see docs/ARCHITECTURE.md.
            batch_budget_s=max(2.0, s.election.renew_deadline),
            failpoints=failpoints,
        )
        self.leadership: Leadership = self._leadership()
        content = s.content
        fields = CandleFields(
            close_time=content.close_time_field,
            trades=content.trades_field,
            taker_buy_volume=content.taker_buy_volume_field,
            quote_volume=content.quote_volume_field,
        )
        candles = MongoCandleStore(self.database, s.audit.collection_template, self.metrics, fields)
        self.ready = False
        # Collections and indexes exist; set once, before any cycle may start.
        self.prepared = False
        acks = MongoAckStore(self.database)
        backfills = MongoBackfillStore(self.database)
        # Content findings: the cycles (and the live tail) record, ListAnomalies reads.
        self.anomalies = MongoAnomalyStore(self.database)
        self.auditor = Auditor(
            s.audit,
            s.backfill,
            s.server.replica_id,
            self.clock,
            candles,
            self.state,
            backfills,
            self.fence,
            self.leadership,
            self.metrics,
            lambda: self.prepared,
            settled=MongoSettledStore(self.database, s.backfill.history_retention),
            owns_verdict=s.live.mode == "off",
            failpoints=failpoints,
            acks=acks,
            content=(
                ContentOptions(content.anomaly_config(), content.suspect_slots, s.audit.timeframes)
                if content.enabled
                else None
            ),
            anomalies=self.anomalies,
        )
        dedupe = Deduplicator(
            s.audit,
            s.duplicates,
            s.server.replica_id,
            self.clock,
            candles,
            MongoDuplicateStore(self.database, s.server.replica_id),
            self.fence,
            self.leadership,
            self.metrics,
            failpoints,
        )
        fills = FillWatch(s.backfill, self.clock, candles, backfills, self.fence)
        self.livetail = LiveTail(
            s.audit,
            s.live,
            self.clock,
            MongoCandleFeed(self.database, self.metrics, fields if content.enabled else None),
            MongoLiveStore(self.database),
            self.fence,
            self.leadership,
            self.metrics,
            failpoints,
            fills=fills,
            content=(
                LiveContent(
                    content.anomaly_config(),
                    content.suspect_slots,
                    s.audit.symbols,
                    s.audit.timeframes,
                    candles,
                    self.anomalies,
                    self.metrics,
                    round(s.audit.ingest_grace * 1000),
                )
                if content.enabled
                else None
            ),
        )
        self.verdicts = VerdictWatch(
            s.audit, s.live, MongoVerdictSource(self.database), self.clock, self.metrics
        )
        self.scheduler: Scheduler | None = None
        self.service = AuditService(
            s.audit,
            s.duplicates,
            s.server.replica_id,
            self.auditor,
            dedupe,
            self.state,
            self.fence,
            self.leadership,
            PageTokens(lambda: deployment_secret(self.database, "page_tokens")),
            lambda: self.ready,
            self._next_cycle_ms,
            self.verdicts,
            read_timeout_ms=s.mongo.timeout_ms,
            acks=acks,
            clock=self.clock,
            anomalies=self.anomalies,
        )
        if s.audit.enabled:
            self.scheduler = Scheduler(
                self.service,
                self.state,
                self.leadership,
                self.clock,
                s.audit.interval,
                s.audit.startup_delay,
            )
        server_creds, peer_creds = tls(s)
        self.forwarder = Forwarder(s.server.replica_id, self.metrics, peer_creds)
        self.server = Server(
            AuditServicer(self.service),
            host=s.server.host,
            port=s.server.port,
            max_message_bytes=s.server.max_message_bytes,
            interceptors=self._interceptors(),
            credentials=server_creds,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._stopped = False
        self._http: WSGIServer | None = None
        # Set when start-up cannot go on (one line); the CLI exits non-zero with it.
        self.failure: str | None = None

    def _leadership(self) -> Leadership:
        s = self.settings
        if not s.election.enabled:
            return Standalone(s.server.replica_id, s.server.advertise_address, self.clock.now_ms())
        from auditsvc.leadership.elector import ElectionConfig, LeaderElector

        return LeaderElector(ElectionConfig.from_settings(s), self.leases, self.clock, self.metrics)

    def _interceptors(self) -> list[object]:
        token = self.settings.security.api_token
        auth = None
        if token:
            protected = ALL_METHODS if self.settings.security.reads_require_token else MUTATING
            auth = AuthGate(token, protected)
        router = ForwardingGate(MUTATING, self.leadership, self.forwarder, self._leader_address)
        return [CallInterceptor(f"/{SERVICE_NAME}/", self.metrics, auth=auth, router=router)]

    def _leader_address(self) -> str | None:
        return self.leadership.last_known_address() or None

    def _next_cycle_ms(self) -> int | None:
        return self.scheduler.next_cycle_ms if self.scheduler else None

    async def start(self) -> None:
        s = self.settings
        if s.ops.metrics_port:
            self._http = serve_metrics(
                self.metrics.registry, s.ops.metrics_host, s.ops.metrics_port
            )
        await self.server.start()
        log.info(
            "serving",
            extra={
                "grpc": f"{s.server.host}:{self.server.port}",
                "metrics_port": s.ops.metrics_port,
            },
        )
        self._tasks.append(asyncio.create_task(self._prepare(), name="db-prepare"))
        self._tasks.append(asyncio.create_task(self._probe_database(), name="db-probe"))
        # Every replica dates the verdicts it serves, leader or not.
        self.verdicts.start()
        if isinstance(self.leadership, Standalone):
            self.metrics.set_leading(True)

    async def _prepare(self) -> None:
        """Creates the collections and indexes, retrying with capped backoff until the
        database answers, then starts what acts while leading: the live tail, the
        election and the scheduler. No cycle or lease upsert can race the creation of
        the collections (that can hang some servers in create_collection), and RunAudit
        answers UNAVAILABLE until it is done.

        A deployment that cannot give majority writes ends the process (``failure``).
        """
        delay = _PROBE_MIN
        while not self.prepared and not self._stopping.is_set():
            try:
                await detect_transactions(self.database, self.settings.mongo.transactions)
                await ensure_indexes(self.database)
                if not isinstance(self.leadership, Standalone):
                    await self.leases.check_majority(self.settings.mongo.timeout_ms)
                self.prepared = True
            except MajorityUnavailable as exc:
                self.failure = str(exc)
                log.error("cannot start: %s", exc)
                self._stopping.set()
                return
            except Exception as exc:
                log.warning(
                    "database not prepared yet; retrying",
                    extra={"reason": type(exc).__name__, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _PROBE_MAX)
        if self._stopping.is_set():
            return
        self.livetail.start()  # tails only while leading
        if not isinstance(self.leadership, Standalone):
            await self.leadership.start()  # type: ignore[attr-defined]
        if self.scheduler is not None:
            self.scheduler.start()

    async def _probe_database(self) -> None:
        """Keeps readiness in step with the database: ready once the collections are
        prepared and while a ping answers; retries with capped backoff."""
        delay = _PROBE_MIN
        while True:
            try:
                await asyncio.wait_for(self.state.ping(), timeout=max(2.0, delay))
                if self.prepared and not self.ready:
                    log.info(
                        "database reachable; ready",
                        extra={"transactions": self.database.transactions},
                    )
                self.ready = self.prepared
                delay = _PROBE_MIN
            except Exception as exc:
                if self.ready or delay == _PROBE_MIN:
                    log.warning(
                        "database unreachable; not ready, retrying",
                        extra={"reason": type(exc).__name__, "retry_in_s": delay},
                    )
                self.ready = False
                delay = min(delay * 2, _PROBE_MAX)
            if not self._stopping.is_set():
                await self.server.set_ready(self.ready)
            await asyncio.sleep(1.0 if self.ready else delay)

    async def stop(self) -> None:
        """Idempotent; see the module docstring for the order.

        The steps share one budget of SHUTDOWN_GRACE seconds, each getting what is
        left (at least _STEP_FLOOR), so with the database stalled the process still
        exits within about SHUTDOWN_GRACE + a few _STEP_FLOORs: a step that overruns is
        cancelled and logged, never waited on.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.server.shutdown_grace

        def left() -> float:
            return max(deadline - loop.time(), 0.0)

        await self.server.set_ready(False)
        log.info("shutting down: readiness off")
        if self.scheduler is not None:
            await _bounded("stop the scheduler", self.scheduler.stop(), left())
        await _bounded("stop the live tail", self.livetail.stop(), left())
        if isinstance(self.leadership, Standalone):
            self.leadership.stop()
        else:
            release = self.leadership.stop()  # type: ignore[attr-defined]
            await _bounded("release leadership", release, left())
        self.metrics.set_leading(False)
        log.info("shutting down: leadership released")
        self.service.closing.set()
        # In-flight calls get at least a floor to finish even when earlier steps used the
        # budget: a call cut by the server's stop reads CANCELLED, which clients do not retry.
        drain = max(left(), 2 * _STEP_FLOOR)
        await _bounded("drain RPCs", self.server.stop(drain), drain + _STEP_FLOOR)
        log.info("shutting down: RPCs drained")
        await _bounded("stop request work", self.service.close(), left())
        await _bounded("stop the verdict watch", self.verdicts.stop(), left())
        await _bounded("close forwarding channels", self.forwarder.close(), left())
        for task in self._tasks:
            task.cancel()
        await _bounded(
            "stop background tasks", asyncio.gather(*self._tasks, return_exceptions=True), left()
        )
        # PyMongo's close ends server sessions over the wire: bounded like the rest.
        await _bounded("close the database client", self.database.close(), left())
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log.info("stopped")

    async def serve_until_signalled(self) -> None:
        """Serves until SIGTERM or SIGINT, then stops in order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            with suppress(Exception):
                await self.stop()


async def _bounded(step: str, work: Awaitable[object], budget: float) -> None:
    """Awaits one shutdown step for at most ``budget`` (floored at _STEP_FLOOR) seconds."""
    try:
        await asyncio.wait_for(work, timeout=max(budget, _STEP_FLOOR))
    except TimeoutError:
        log.warning("shutting down: step overran SHUTDOWN_GRACE; cancelled", extra={"step": step})
    except Exception as exc:
        log.warning(
            "shutting down: step failed",
            extra={"step": step, "reason": f"{type(exc).__name__}: {exc}"},
        )
