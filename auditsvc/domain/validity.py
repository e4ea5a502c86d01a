"""The validity score: the share of a series' present candles that no content rule flagged.

``validity = 100 * (present - anomalous) / present``, a float in [0, 100]; a window
with no present candle scores 100.0 (nothing stored is wrong). It sits beside the
quality score and never changes it: clients rely on the quality formula.

Guarantees: a candle with several findings counts once (:func:`anomalous_candles`
counts distinct open times), and the result is clamped to [0, 100] whatever the
counts.

``suspect``: a series is suspect while a finding lies within the last
``slots`` slots (VALIDITY_SUSPECT_SLOTS) of its live edge, the exclusive end of
its due slots. The cycle decides it from the stored findings (:func:`is_suspect`);
the live tail, which finds a candle as it arrives, stores how long its finding
keeps the series suspect (:func:`suspect_until`); a served score is suspect when
either says so (:func:`served_suspect`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from auditsvc.domain.anomalies import Anomaly
from auditsvc.domain.records import ScoreRecord
from auditsvc.domain.timeframes import Timeframe


def anomalous_candles(findings: Iterable[Anomaly]) -> int:
    """How many distinct candles (open times) the findings name."""
    return len({a.open_time_ms for a in findings})


def validity(present_candles: int, anomalous: int) -> float:
    """100 x candles without an anomaly / present candles."""
    if present_candles <= 0:
        return 100.0
    clean = present_candles - min(max(anomalous, 0), present_candles)
    return 100.0 * clean / present_candles


def is_suspect(tf: Timeframe, newest_finding_ms: int | None, edge_ms: int, slots: int) -> bool:
    """A finding on a candle opening in the last ``slots`` slots before ``edge_ms``
    (or after it: a candle not yet due that the live tail already judged)."""
    if newest_finding_ms is None:
        return False
    return newest_finding_ms >= tf.shift(tf.floor(edge_ms), -slots)


def suspect_until(tf: Timeframe, open_ms: int, slots: int, grace_ms: int) -> int:
    """The instant a finding on the candle opening at ``open_ms`` stops making its
    series suspect: when the live edge (``settled_end``, AUDIT_INGEST_GRACE after a
    slot closes) has moved ``slots`` + 1 slots past it."""
    return tf.shift(tf.floor(open_ms), slots + 1) + grace_ms


def served_suspect(record: ScoreRecord, now_ms: int) -> ScoreRecord:
    """``record`` with ``suspect`` as served at ``now_ms``: the cycle's flag, or the
    live tail's horizon not yet reached."""
    live = record.live_suspect_until_ms
    suspect = record.suspect or (live is not None and now_ms < live)
    return record if suspect == record.suspect else dataclasses.replace(record, suspect=suspect)
