"""Runtime operations on the real wire: /metrics exposes every documented metric with
help text, only the leader reports live leader gauges, and health follows the database."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import connect
from auditsvc.transport.server import SERVICE_NAME
from tests.cluster.harness import ReplicaProcess, one_leader
from tests.support import SecantusDB, eventually, free_port, replica_env

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
END_MS = 1_767_225_600_000
SLOTS = 240
TIMEOUT = 10.0
SERIES = {"symbol": "BTCUSDT", "timeframe": "1m"}
HEALTH = health_pb2.HealthCheckResponse
Families = dict[str, Any]


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


WINDOW = {"start_time": ts(END_MS - SLOTS * 60_000), "end_time": ts(END_MS)}


# -- /metrics --------------------------------------------------------------------


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def scrape(port: int) -> Families:
    """The families on 127.0.0.1:port/metrics by family name (counters lose ``_total``)."""
    text = await asyncio.wait_for(asyncio.to_thread(scrape_text, port), timeout=TIMEOUT)
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: Families, family: str, **labels: str) -> list[Sample]:
    """The value samples (not ``_created``) of ``family`` whose labels include ``labels``."""
    found = families.get(family)
    if found is None:
        return []
    return [
        s
        for s in found.samples
        if not s.name.endswith("_created") and labels.items() <= s.labels.items()
    ]


def value(families: Families, family: str, **labels: str) -> float:
    matched = samples(families, family, **labels)
    assert len(matched) == 1, f"{family}{labels}: {matched}"
    return float(matched[0].value)


def family_of(name: str, families: Families) -> Any:
    """The family a documented name belongs to: counters are listed with ``_total``."""
    if name in families:
        return families[name]
    base = name.removesuffix("_total")
    if name.endswith("_total") and families.get(base) is not None:
        family = families[base]
        return family if family.type == "counter" else None
    return None


def series_names(families: Families) -> set[str]:
    """Every series name a PromQL expression can select from these families."""
    names: set[str] = set()
    for name, family in families.items():
        if family.type == "counter":
            names.add(f"{name}_total")
        elif family.type == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(name)
    return names


def documented() -> list[str]:
    lines = (MONITORING / "METRICS.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for item in node for e in _exprs(item)]
    return []


def referenced() -> dict[str, set[str]]:
    """Metric names used in alert and dashboard expressions, by file."""
    name = re.compile(r"\b(?:data_manager|auditsvc)_[a-zA-Z0-9_]+")
    sources = {
        "alerts.yaml": _exprs(yaml.safe_load((MONITORING / "alerts.yaml").read_text())),
        "dashboard.json": _exprs(json.loads((MONITORING / "dashboard.json").read_text())),
    }
    return {file: {m for e in exprs for m in name.findall(e)} for file, exprs in sources.items()}


# -- fixtures --------------------------------------------------------------------


async def seed(uri: str, database: str) -> None:
    """Demo candles for BTCUSDT 1m: 2 gaps and 3 duplicate groups."""
    handle = connect(uri, database, 5000)
    try:
        docs, _ = demo_series("BTCUSDT", "1m", END_MS, SLOTS)
        await asyncio.wait_for(handle.db["candles_BTCUSDT_1m"].insert_many(docs), TIMEOUT)
    finally:
        await handle.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SecantusDB]:
    server = SecantusDB(storage=str(tmp_path / "db"))
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.close)


def settings_for(uri: str, database: str, **env: str) -> Settings:
    return Settings.from_env(
        replica_env(
            uri,
            database,
            METRICS_PORT=str(free_port()),
            AUDIT_SYMBOLS="BTCUSDT",
            AUDIT_TIMEFRAMES="1m",
            **env,
        )
    )


async def status_code(call: Any) -> grpc.StatusCode:
    try:
        await asyncio.wait_for(call, timeout=TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# -- tests -----------------------------------------------------------------------


class TestMetricsEndpoint:
    """A standalone replica's /metrics documents and fills every metric after real calls."""

    @pytest.fixture
    async def families(
        self, mongo: SecantusDB, db_name: str, start_replica: Callable[..., Any]
    ) -> Families:
        await seed(mongo.uri, db_name)
        settings = settings_for(
            mongo.uri,
            db_name,
            ENABLE_AUTO_BACKFILL="true",
            MIN_AUTO_BACKFILL_GAP="60",
            MAX_AUTO_BACKFILL_JOBS="1",
            ENABLE_DUPLICATE_REMOVAL="true",
        )
        replica = await start_replica(settings)
        stub = replica.stub
        await stub.RunAudit(pb.RunAuditRequest(**WINDOW), timeout=TIMEOUT)
        await stub.ResolveDuplicates(
            pb.ResolveDuplicatesRequest(**SERIES, **WINDOW, request_id="ops-1"), timeout=TIMEOUT
        )
        bad = stub.RunAudit(pb.RunAuditRequest(symbols=["DOGEUSDT"]), timeout=TIMEOUT)
        assert await status_code(bad) == grpc.StatusCode.NOT_FOUND
        return await scrape(settings.ops.metrics_port)

    async def test_documented_metrics_have_help(self, families: Families) -> None:
        """Every name in METRICS.txt is exposed with non-empty help text."""
        names = documented()
        assert len(names) == 29, names
        missing = [n for n in names if family_of(n, families) is None]
        assert not missing, f"not on /metrics: {missing}"
        silent = [n for n in names if not family_of(n, families).documentation.strip()]
        assert not silent, f"no help text: {silent}"

    async def test_exposed_metrics_are_documented(self, families: Families) -> None:
        """Nothing the service exports is missing from METRICS.txt."""
        listed = {family_of(n, families).name for n in documented()}
        ours = {
            name
            for name in families
            if name.startswith(("data_manager_", "auditsvc_")) and not name.endswith("_created")
        }
        assert ours - listed == set()

    async def test_alert_and_dashboard_metrics_exposed(self, families: Families) -> None:
        """Every metric an alert rule or dashboard panel queries is a series /metrics serves."""
        served = series_names(families)
        for file, names in referenced().items():
            assert names, f"no metric names found in {file}"
            assert names <= served, f"{file} queries unexposed {sorted(names - served)}"

    async def test_calls_fill_the_series(self, families: Families) -> None:
        """RunAudit and ResolveDuplicates fill the series they drive; a report sets no score."""
        assert value(families, "data_manager_audit_leader_status") == 1
        assert value(families, "data_manager_audit_leader_epoch") == 0
        assert value(families, "data_manager_audit_cycle_seconds", le="+Inf") == 1
        assert value(families, "data_manager_audit_gaps_detected", **SERIES) == 2
        assert value(families, "data_manager_audit_duplicates_detected", **SERIES) == 3
        # WINDOW ends before the live edge: a report, which never sets the score gauge
        # (the live gauge is checked in TestLeaderOnlyGauges).
        assert samples(families, "data_manager_audit_health_score") == []
        assert value(families, "data_manager_audit_backfills_triggered", **SERIES) == 1
        assert value(families, "data_manager_audit_backfills_skipped", **SERIES) == 1
        assert value(families, "data_manager_duplicates_removed", **SERIES) == 3
        # Only scheduled (full) cycles set it (tests/integration/test_schedule.py): a RunAudit
        # must not keep the stalled-audit alert silent.
        assert value(families, "data_manager_audit_last_success_timestamp_seconds") == 0
        assert value(families, "data_manager_audit_lease_renew_failures") == 0

    async def test_grpc_requests_by_method_and_code(self, families: Families) -> None:
        """Requests are counted and timed per method, with the real status code name."""
        grpc_requests = "auditsvc_grpc_requests"
        assert value(families, grpc_requests, method="RunAudit", code="OK") == 1
        assert value(families, grpc_requests, method="RunAudit", code="NOT_FOUND") == 1
        assert value(families, grpc_requests, method="ResolveDuplicates", code="OK") == 1
        timed = "auditsvc_grpc_request_seconds"
        assert value(families, timed, method="RunAudit", le="+Inf") == 2


@pytest.mark.slow
class TestLeaderOnlyGauges:
    """With two election-enabled replicas only the leader reports live leader gauges."""

    async def test_follower_reports_no_scores(self, db: SecantusDB, tmp_path: Path) -> None:
        """Follower: leader_status 0 and no health scores; leader: 1 and scores after RunAudit."""
        await seed(db.uri, "ops")
        replicas = [
            ReplicaProcess(
                name, db.uri, "ops", tmp_path, AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m"
            )
            for name in ("r1", "r2")
        ]
        try:
            for replica in replicas:
                await asyncio.to_thread(replica.start)
            leader = await one_leader(replicas, within=15)
            follower = next(r for r in replicas if r is not leader)
            epoch = (await leader.leader()).epoch

            async def follower_knows_epoch() -> bool:
                m = await scrape(follower.metrics_port)
                return value(m, "data_manager_audit_leader_epoch") == epoch

            await eventually(follower_knows_epoch, within=TIMEOUT)

            async def forwarded_audit() -> bool:
                # The default window: only a live audit sets the score gauge.
                call = follower.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)
                return await status_code(call) == grpc.StatusCode.OK

            # Through the follower, so both its forwarding and the leader's audit show.
            await eventually(forwarded_audit, within=TIMEOUT, interval=0.2)
            lead, follow = await scrape(leader.metrics_port), await scrape(follower.metrics_port)
        finally:
            for replica in replicas:
                await replica.close()
        assert value(lead, "data_manager_audit_leader_status") == 1
        assert value(follow, "data_manager_audit_leader_status") == 0
        assert 0 <= value(lead, "data_manager_audit_health_score", **SERIES) < 100
        assert samples(follow, "data_manager_audit_health_score") == []
        assert value(lead, "data_manager_audit_leadership_transitions", direction="started") == 1
        assert samples(follow, "data_manager_audit_leadership_transitions") == []
        assert value(follow, "data_manager_audit_leader_epoch") == epoch
        forwarded = "auditsvc_forwarded_calls"
        assert value(follow, forwarded, method="RunAudit", outcome="OK") >= 1
        assert samples(lead, forwarded) == []
        assert samples(follow, "data_manager_audit_cycle_seconds") != []
        assert value(follow, "data_manager_audit_cycle_seconds", le="+Inf") == 0

    async def test_deposed_leader_drops_scores(self, db: SecantusDB, tmp_path: Path) -> None:
        """A leader that loses the database steps down: status 0, scores gone, failures counted."""
        await seed(db.uri, "ops")
        replica = ReplicaProcess(
            "solo", db.uri, "ops", tmp_path, AUDIT_SYMBOLS="BTCUSDT", AUDIT_TIMEFRAMES="1m"
        )
        try:
            await asyncio.to_thread(replica.start)
            await one_leader([replica], within=15)
            await replica.stub.RunAudit(pb.RunAuditRequest(), timeout=TIMEOUT)  # live: a gauge
            before = await scrape(replica.metrics_port)
            await asyncio.to_thread(db.stop)

            async def deposed() -> Families | None:
                m = await scrape(replica.metrics_port)
                return m if value(m, "data_manager_audit_leader_status") == 0 else None

            after = await eventually(deposed, within=TIMEOUT, interval=0.1)
        finally:
            await replica.close()
        assert value(before, "data_manager_audit_leader_status") == 1
        assert samples(before, "data_manager_audit_health_score", **SERIES) != []
        assert samples(after, "data_manager_audit_health_score") == []
        assert value(after, "data_manager_audit_lease_renew_failures") >= 1
        assert value(after, "data_manager_audit_leadership_transitions", direction="stopped") == 1


class TestHealth:
    """grpc.health.v1: "" is liveness, the AuditService name is readiness (database)."""

    async def test_watch_follows_the_database(
        self, db: SecantusDB, start_replica: Callable[..., Any]
    ) -> None:
        """Watch on readiness streams NOT_SERVING when the database stops, SERVING when back."""
        replica = await start_replica(settings_for(db.uri, "health"))
        health = health_pb2_grpc.HealthStub(replica.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=90)
        try:
            first = await asyncio.wait_for(watch.read(), timeout=TIMEOUT)
            assert first.status == HEALTH.SERVING
            await asyncio.to_thread(db.stop)
            down = await asyncio.wait_for(watch.read(), timeout=20)
            assert down.status == HEALTH.NOT_SERVING
            ready = await health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT
            )
            live = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
            assert (ready.status, live.status) == (HEALTH.NOT_SERVING, HEALTH.SERVING)
            await asyncio.to_thread(db.start)
            up = await asyncio.wait_for(watch.read(), timeout=30)
            assert up.status == HEALTH.SERVING
        finally:
            watch.cancel()

    async def test_unknown_service_not_found(
        self, mongo: SecantusDB, db_name: str, start_replica: Callable[..., Any]
    ) -> None:
        """Check on a service the server does not have answers NOT_FOUND."""
        replica = await start_replica(settings_for(mongo.uri, db_name))
        health = health_pb2_grpc.HealthStub(replica.channel)
        call = health.Check(health_pb2.HealthCheckRequest(service="nope.v1.X"), timeout=TIMEOUT)
        assert await status_code(call) == grpc.StatusCode.NOT_FOUND
