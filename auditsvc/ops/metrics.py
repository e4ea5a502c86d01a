"""Prometheus metrics on an injected registry (never the global REGISTRY).

The seven ``data_manager_*`` names are the original auditor's and are kept
exactly, so existing dashboards and alerts keep working.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from auditsvc.ops.ports import ensure_free
from auditsvc.ops.settings import ConfigError

# Detection to fill: a minute (the live tail and a quick writer) to a week.
_FILL_BUCKETS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400, 604800)

_CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_DETECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        series = ("symbol", "timeframe")
        self.cycle_seconds = Histogram(
            "data_manager_audit_cycle_seconds",
            "Duration of an audit cycle, seconds.",
            registry=r,
            buckets=_CYCLE_BUCKETS,
        )
        self.series_scans = Counter(
            "data_manager_audit_series_scans_total",
            "Series audited over the default window, by kind: full or incremental",
            ["kind"],
            registry=self.registry,
        )
        self.gaps_detected = Counter(
            "data_manager_audit_gaps_detected_total",
            "Gaps found by audits.",
            series,
            registry=r,
        )
        self.duplicates_detected = Counter(
            "data_manager_audit_duplicates_detected_total",
            "Duplicate groups found by audits.",
            series,
            registry=r,
        )
        self.health_score = Gauge(
            "data_manager_audit_health_score",
            "Latest quality score (0-100) per series; leader only.",
            series,
            registry=r,
        )
        self.leader_status = Gauge(
            "data_manager_audit_leader_status",
            "1 while this replica leads (or runs standalone), else 0.",
            registry=r,
        )
        self.backfills_triggered = Counter(
            "data_manager_audit_backfills_triggered_total",
            "Backfill requests written.",
            (*series, "severity"),
            registry=r,
        )
        self.duplicates_removed = Counter(
            "data_manager_duplicates_removed_total",
            "Duplicate documents archived and deleted.",
            (*series, "strategy"),
            registry=r,
        )
        self.grpc_requests = Counter(
            "auditsvc_grpc_requests",
            "gRPC requests handled, by method and status code.",
            ("method", "code"),
            registry=r,
        )
        self.grpc_seconds = Histogram(
            "auditsvc_grpc_request_seconds",
            "gRPC handling time by method, seconds.",
            ("method",),
            registry=r,
            buckets=_RPC_BUCKETS,
        )
        self.forwarded = Counter(
            "auditsvc_forwarded_calls",
            "Calls forwarded from a follower to the leader, by outcome.",
            ("method", "outcome"),
            registry=r,
        )
        self.renew_failures = Counter(
            "data_manager_audit_lease_renew_failures",
            "Lease renewals that failed while leading.",
            registry=r,
        )
        self.transitions = Counter(
            "data_manager_audit_leadership_transitions",
            "Times this replica started or stopped leading.",
            ("direction",),
            registry=r,
        )
        self.epoch = Gauge(
            "data_manager_audit_leader_epoch",
            "Fencing epoch of the current leader as this replica knows it.",
            registry=r,
        )
        self.backfills_skipped = Counter(
            "data_manager_audit_backfills_skipped",
            "Backfill requests not written because MAX_AUTO_BACKFILL_JOBS were open.",
            series,
            registry=r,
        )
        # The healing pass (usecases/healing.py): every request's outcome, by timeframe.
        self.backfills_live = Gauge(
            "data_manager_audit_backfills_live",
            "Backfill requests open now (they count against MAX_AUTO_BACKFILL_JOBS); leader only.",
            ("timeframe",),
            registry=r,
        )
        self.backfills_expired = Counter(
            "data_manager_audit_backfills_expired",
            "Backfill requests closed as expired: their gap stayed unshrunk for BACKFILL_TIMEOUT.",
            ("timeframe",),
            registry=r,
        )
        self.gaps_unfillable = Counter(
            "data_manager_audit_gaps_unfillable",
            "Gaps given up on after BACKFILL_MAX_ATTEMPTS unsuccessful requests.",
            ("timeframe",),
            registry=r,
        )
        self.gap_fill_seconds = Histogram(
            "data_manager_audit_gap_fill_seconds",
            "From a gap's detection to the cycle that found it filled, seconds.",
            ("timeframe",),
            registry=r,
            buckets=_FILL_BUCKETS,
        )
        self.last_success = Gauge(
            "data_manager_audit_last_success_timestamp_seconds",
            "Unix time of the last successful scheduled (full) audit cycle on this replica.",
            registry=r,
        )

        self.live_mode = Gauge(
            "auditsvc_live_mode",
            "1 for the live-tail mode the leader uses (change_stream or poll), else 0.",
            ("mode",),
            registry=r,
        )
        self.series_state = Gauge(
            "auditsvc_series_state",
            "Configured series per live state (live, late, no_data); leader only.",
            ("state",),
            registry=r,
        )
        self.candles_ignored = Counter(
            "auditsvc_candles_ignored_total",
            "Candles never taken as a series' newest or read by a cycle, by reason: "
            "out_of_range, wrong_type or missing timestamp, or future (opens more than "
            "one slot + AUDIT_INGEST_GRACE past now).",
            ("reason",),
            registry=r,
        )
        self.live_detection_seconds = Histogram(
            "auditsvc_live_detection_seconds",
            "From a missing candle's close + AUDIT_INGEST_GRACE to its LATE score being stored.",
            registry=r,
            buckets=_DETECT_BUCKETS,
        )

        self.live_tail_up = Gauge(
            "auditsvc_live_tail_up",
            "1 while the leader's live tail is current (its last confirmation stored), "
            "else 0; leader only.",
            registry=r,
        )
        self.live_tail_restarts = Counter(
            "auditsvc_live_tail_restarts_total",
            "Live-tail restarts after a failure, by reason (the exception's type).",
            ("reason",),
            registry=r,
        )
        self.anomalies_found = Counter(
            "auditsvc_anomalies_found_total",
            "Candle content findings newly stored (a finding found again is not counted), "
            "by rule (AnomalyRule name) and timeframe; leader only.",
            ("rule", "timeframe"),
            registry=r,
        )
        self.suspect_series = Gauge(
            "auditsvc_suspect_series",
            "Series served suspect (a content finding within VALIDITY_SUSPECT_SLOTS of the "
            "live edge), by timeframe, as of the last cycle; leader only.",
            ("timeframe",),
            registry=r,
        )
        self.verdict_age = Gauge(
            "auditsvc_verdict_age_seconds",
            "Age of the oldest live verdict this replica serves: since the leader's tail "
            "last confirmed every series (database clock). Past LIVE_STALE_AFTER it "
            "serves UNKNOWN.",
            registry=r,
        )

    def set_leading(self, leading: bool) -> None:
        self.leader_status.set(1 if leading else 0)
        if not leading:
            # Followers must not keep exporting scores that are no longer live.
            self.health_score.clear()
            self.series_state.clear()
            self.suspect_series.clear()
            self.live_mode.clear()
            self.live_tail_up.clear()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Starts the /metrics HTTP server on a daemon thread. A busy METRICS_PORT raises
    ConfigError naming it (one line, exit 2), not prometheus_client's OSError."""
    ensure_free("METRICS_PORT", host, port)
    try:
        server, _ = start_http_server(port, host, registry=registry)
    except OSError:
        ensure_free("METRICS_PORT", host, port)  # taken between the check and the bind?
        raise ConfigError("METRICS_PORT", f"cannot listen on {host}:{port}") from None
    return server
