"""Render auditsvc responses for humans (aligned text tables) and machines (JSON).

Guarantees: JSON is protobuf's canonical ``json_format`` output with the .proto field
names and every field present (zeros included); tables never include secrets (no
response carries any); an unset timestamp renders as ``-``; a verdict's age is
measured on the local clock at rendering time, and a score without ``verdict_time``
reads ``never``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from auditpb.v1 import audit_pb2

from ._scores import verdict_age
from ._watch import StreamEvent


def message_dict(message: Message) -> dict[str, Any]:
    """Return a protobuf message as a JSON-ready dict (proto field names, zeros kept)."""
    result: dict[str, Any] = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return result


def to_json(value: Message | dict[str, Any], *, compact: bool = False) -> str:
    """Return a message (or a dict of already converted messages) as JSON text."""
    data = value if isinstance(value, dict) else message_dict(value)
    return json.dumps(data, indent=None if compact else 2, sort_keys=False)


def gaps_json(gaps: Iterable[audit_pb2.Gap]) -> str:
    """Return ``{"gaps": [...]}`` for every gap of every page."""
    return to_json({"gaps": [message_dict(gap) for gap in gaps]})


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Return left-aligned columns separated by two spaces, headers first."""
    cells = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def timestamp(message: Message, field: str) -> str:
    """Return ``message.field`` as ``YYYY-MM-DDTHH:MM:SSZ``, or ``-`` when unset."""
    if not message.HasField(field):
        return "-"
    value = getattr(message, field).ToDatetime(tzinfo=UTC)
    text: str = value.isoformat().replace("+00:00", "Z")
    return text


def _enum(wrapper: Any, value: int, prefix: str) -> str:
    try:
        name: str = wrapper.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def _pairs(pairs: Iterable[tuple[str, object]]) -> str:
    return table(("FIELD", "VALUE"), ((key, value) for key, value in pairs))


def leader(response: audit_pb2.GetLeaderResponse) -> str:
    """Render GetLeader."""
    return _pairs(
        [
            ("leader_id", response.leader_id or "(none known)"),
            ("leader_address", response.leader_address or "-"),
            ("epoch", response.epoch),
            ("is_self", str(response.is_self).lower()),
            ("elected_at", timestamp(response, "elected_at")),
            ("lease_expires_at", timestamp(response, "lease_expires_at")),
        ]
    )


def cycle(c: audit_pb2.AuditCycle) -> str:
    """Render one audit cycle: its header, then one row per series (when it has them)."""
    summary = _pairs(
        [
            ("cycle_id", c.cycle_id),
            ("status", _enum(audit_pb2.CycleStatus, c.status, "CYCLE_STATUS_")),
            ("trigger", c.trigger or "-"),
            ("served_by", c.served_by or "-"),
            ("epoch", c.epoch),
            ("started_at", timestamp(c, "started_at")),
            ("finished_at", timestamp(c, "finished_at")),
        ]
        + ([("error", c.error)] if c.error else [])
    )
    series = table(
        ("SYMBOL", "TF", "EXPECTED", "PRESENT", "MISSING", "GAPS", "DUP_GROUPS", "QUALITY"),
        (
            (
                s.symbol,
                s.timeframe,
                s.expected_candles,
                s.present_candles,
                s.missing_candles,
                s.gap_count,
                s.duplicate_groups,
                f"{s.health.quality:.2f}" if s.HasField("health") else "-",
            )
            for s in c.series
        ),
    )
    return f"{summary}\n\n{series}" if c.series else summary


def status(response: audit_pb2.GetStatusResponse) -> str:
    """Render GetStatus."""
    text = _pairs(
        [
            ("replica_id", response.replica_id),
            ("role", _enum(audit_pb2.Role, response.role, "ROLE_")),
            ("leader_id", response.leader_id or "(none known)"),
            ("epoch", response.epoch),
            ("auditor_enabled", str(response.auditor_enabled).lower()),
            ("database_reachable", str(response.database_reachable).lower()),
            ("series_count", response.series_count),
            ("version", response.version or "-"),
            ("next_cycle_at", timestamp(response, "next_cycle_at")),
        ]
    )
    if not response.HasField("last_cycle"):
        return f"{text}\n\nlast cycle: none yet"
    text = f"{text}\n\nlast cycle:\n{cycle(response.last_cycle)}"
    if response.HasField("summary"):
        text = f"{text}\n\nsummary:\n{summary(response.summary)}"
    return text


def summary(s: audit_pb2.StatusSummary) -> str:
    """Render a cycle summary: counts, then the worst series."""
    states = ", ".join(
        f"{_enum(audit_pb2.SeriesState, c.state, 'SERIES_STATE_')}={c.count}" for c in s.states
    )
    head = _pairs(
        [
            ("series", s.series_count),
            ("states", states or "-"),
            ("open_gaps", s.open_gaps),
            ("min_quality", f"{s.min_quality:.2f}"),
            ("median_quality", f"{s.median_quality:.2f}"),
        ]
    )
    worst = table(
        ("WORST", "TF", "QUALITY", "GAPS", "STATE"),
        (
            (
                w.symbol,
                w.timeframe,
                f"{w.quality:.2f}",
                w.gap_count,
                _enum(audit_pb2.SeriesState, w.state, "SERIES_STATE_"),
            )
            for w in s.worst_series
        ),
    )
    return f"{head}\n{worst}"


def gaps(items: Sequence[audit_pb2.Gap]) -> str:
    """Render gaps, one row each, with a count line."""
    rows = table(
        ("SYMBOL", "TF", "START", "END", "MISSING", "SEVERITY", "BACKFILL", "STATE", "ATTEMPTS"),
        (
            (
                g.symbol,
                g.timeframe,
                timestamp(g, "start_time"),
                timestamp(g, "end_time"),
                g.missing_candles,
                _enum(audit_pb2.Severity, g.severity, "SEVERITY_"),
                g.backfill_request_id or "-",
                _enum(audit_pb2.GapState, g.state, "GAP_STATE_"),
                g.attempts,
            )
            for g in items
        ),
    )
    return f"{rows}\n{len(items)} gap(s)"


def _value(anomaly: audit_pb2.Anomaly, field: str) -> str:
    return f"{getattr(anomaly, field):.10g}" if anomaly.HasField(field) else "-"


def anomalies(items: Sequence[audit_pb2.Anomaly]) -> str:
    """Render candle content findings, one row each, with a count line."""
    rows = table(
        ("SYMBOL", "TF", "OPEN_TIME", "RULE", "FIELD", "OBSERVED", "EXPECTED", "LIVE", "DETAIL"),
        (
            (
                a.symbol,
                a.timeframe,
                timestamp(a, "open_time"),
                _enum(audit_pb2.AnomalyRule, a.rule, "ANOMALY_RULE_"),
                a.field or "-",
                _value(a, "observed"),
                _value(a, "expected"),
                "yes" if a.detected_live else "no",
                a.detail,
            )
            for a in items
        ),
    )
    return f"{rows}\n{len(items)} anomaly(ies)"


def anomalies_json(items: Iterable[audit_pb2.Anomaly]) -> str:
    """Return ``{"anomalies": [...]}`` for every page."""
    return to_json({"anomalies": [message_dict(a) for a in items]})


def acks(items: Sequence[audit_pb2.Acknowledgement]) -> str:
    """Render acknowledgements, one row each, with a count line."""
    rows = table(
        ("ID", "SYMBOLS", "TIMEFRAMES", "START", "END", "REASON"),
        (
            (
                a.id,
                ",".join(a.symbols) or "*",
                ",".join(a.timeframes) or "*",
                timestamp(a, "start_time"),
                timestamp(a, "end_time"),
                a.reason,
            )
            for a in items
        ),
    )
    return f"{rows}\n{len(items)} acknowledgement(s)"


def acks_json(items: Iterable[audit_pb2.Acknowledgement]) -> str:
    """Return ``{"acknowledgements": [...]}`` for every page."""
    return to_json({"acknowledgements": [message_dict(a) for a in items]})


def resolve(response: audit_pb2.ResolveDuplicatesResponse) -> str:
    """Render ResolveDuplicates: a summary, then the reported groups."""
    summary = _pairs(
        [
            ("dry_run", str(response.dry_run).lower()),
            ("strategy", _enum(audit_pb2.Strategy, response.strategy, "STRATEGY_")),
            ("duplicate_groups", response.duplicate_groups),
            ("surplus_documents", response.surplus_documents),
            ("documents_removed", response.documents_removed),
            ("documents_archived", response.documents_archived),
            # Groups left untouched (changed since they were read): never hidden.
            ("groups_skipped", response.groups_skipped),
            ("removal_enabled", str(response.removal_enabled).lower()),
            ("served_by", response.served_by or "-"),
            ("request_id", response.request_id or "-"),
        ]
        + ([("message", response.message)] if response.message else [])
    )
    groups = table(
        ("TIMESTAMP", "KEPT", "REMOVED", "DOCUMENTS"),
        (
            (
                timestamp(g, "timestamp"),
                g.kept_id or "-",
                ",".join(g.removed_ids) or "-",
                ",".join(g.document_ids),
            )
            for g in response.groups
        ),
    )
    if not response.skipped_groups:
        return f"{summary}\n\n{groups}"
    skipped = ", ".join(
        t.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z") for t in response.skipped_groups
    )
    return f"{summary}\n\n{groups}\n\nskipped (first {len(response.skipped_groups)}): {skipped}"


HEALTH_HEADERS = (
    "SYMBOL",
    "TF",
    "STATE",
    "LAST_CANDLE",
    "LATE",
    "VERDICT",
    "QUALITY",
    "COMPLETE",
    "CONSIST",
    "FRESH",
    "GAPS",
    "DUPS",
    "SUSPECT",
    "VALIDITY",
    "COMPUTED_AT",
)


def state(s: audit_pb2.HealthScore) -> str:
    """Return the series state as ``live``, ``late``, ``no_data``, ``unknown`` (nobody
    can vouch for it now) or ``-`` (unspecified: a score stored before the server knew
    states)."""
    if s.state == audit_pb2.SERIES_STATE_UNSPECIFIED:
        return "-"
    return _enum(audit_pb2.SeriesState, s.state, "SERIES_STATE_")


def age(seconds: float) -> str:
    """Return a duration compactly: ``0.4s``, ``42s``, ``17m``, ``5h``, ``3d``; negative
    (a verdict stamped ahead of the local clock) with a minus sign."""
    sign, value = ("-", -seconds) if seconds < 0 else ("", seconds)
    if value < 10:
        text = f"{value:.1f}s"
    elif value < 120:
        text = f"{value:.0f}s"
    elif value < 2 * 3600:
        text = f"{value // 60:.0f}m"
    elif value < 2 * 86400:
        text = f"{value // 3600:.0f}h"
    else:
        text = f"{value // 86400:.0f}d"
    return sign + text


def verdict(s: audit_pb2.HealthScore, now: datetime | None = None) -> str:
    """Return how long ago the score's state was confirmed (``0.4s ago``), ``never``
    without a ``verdict_time``, or ``0.3s ahead`` when stamped past ``now``."""
    seconds = verdict_age(s, now)
    if seconds is None:
        return "never"
    return f"{age(-seconds)} ahead" if seconds < 0 else f"{age(seconds)} ago"


def health_row(s: audit_pb2.HealthScore, now: datetime | None = None) -> tuple[object, ...]:
    """Return one health score as a row of :data:`HEALTH_HEADERS`, its verdict's age
    measured at ``now`` (default: the local clock)."""
    return (
        s.symbol,
        s.timeframe,
        state(s),
        timestamp(s, "last_candle_open"),
        s.late_candles,
        verdict(s, now),
        f"{s.quality:.2f}",
        f"{s.completeness:.2f}",
        f"{s.consistency:.2f}",
        f"{s.freshness:.2f}",
        s.gap_count,
        s.duplicate_groups,
        "yes" if s.suspect else "no",
        f"{s.validity:.2f}",
        timestamp(s, "computed_at"),
    )


def health_table(scores: Iterable[audit_pb2.HealthScore], now: datetime | None = None) -> str:
    """Render the latest score of each series, sorted by (symbol, timeframe)."""
    ordered = sorted(scores, key=lambda s: (s.symbol, s.timeframe))
    moment = now or datetime.now(UTC)
    return table(HEALTH_HEADERS, (health_row(s, moment) for s in ordered))


def scores(items: Sequence[audit_pb2.HealthScore], now: datetime | None = None) -> str:
    """Render ListHealthScores (every page): one row per series, with a count line."""
    return f"{health_table(items, now)}\n{len(items)} series"


def scores_json(items: Iterable[audit_pb2.HealthScore]) -> str:
    """Return ``{"scores": [...]}`` for every score of every page."""
    return to_json({"scores": [message_dict(s) for s in items]})


def health_line(
    s: audit_pb2.HealthScore,
    previous: audit_pb2.HealthScore | None = None,
    now: datetime | None = None,
) -> str:
    """Render one score update as a single line; a state change since ``previous``
    (the series' last update) is spelled out as ``state=late (was live)``, and
    ``verdict_age`` is measured at ``now`` (``never`` without a verdict_time)."""
    change = ""
    if previous is not None and previous.state != s.state:
        change = f" (was {state(previous)})"
    seconds = verdict_age(s, now)
    return (
        f"{timestamp(s, 'computed_at')} {s.symbol} {s.timeframe} state={state(s)}{change} "
        f"last_candle={timestamp(s, 'last_candle_open')} late={s.late_candles} "
        f"verdict_age={'never' if seconds is None else age(seconds)} "
        f"quality={s.quality:.2f} "
        f"completeness={s.completeness:.2f} consistency={s.consistency:.2f} "
        f"freshness={s.freshness:.2f} gaps={s.gap_count} duplicates={s.duplicate_groups}"
    )


def connection(event: StreamEvent, now: datetime | None = None) -> str:
    """Render a health stream's drop or return as one line, stamped with ``now``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if event.kind == "reconnected":
        return f"{stamp} stream reconnected after {event.down_for:.1f}s"
    error = event.error
    # An error without a status (the server ended the stream) would read "UNKNOWN: ...",
    # easy to mistake for the series state: say only what happened.
    why = error.details if error is not None and error.code is None else str(error)
    return f"{stamp} stream disconnected ({why}); reconnecting"
