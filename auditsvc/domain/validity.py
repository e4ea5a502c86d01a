"""The validity score: the share of a series' present candles that no content rule flagged.

``validity = 100 * (present - anomalous) / present``, a float in [0, 100]; a window
with no present candle scores 100.0 (nothing stored is wrong). It sits beside the
quality score and never changes it: clients rely on the quality formula.

Guarantees: a candle with several findings counts once (:func:`anomalous_candles`
counts distinct open times), and the result is clamped to [0, 100] whatever the
counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditsvc.domain.anomalies import Anomaly


def anomalous_candles(findings: Iterable[Anomaly]) -> int:
    """How many distinct candles (open times) the findings name."""
    return len({a.open_time_ms for a in findings})


def validity(present_candles: int, anomalous: int) -> float:
    """100 x candles without an anomaly / present candles."""
    if present_candles <= 0:
        return 100.0
    clean = present_candles - min(max(anomalous, 0), present_candles)
    return 100.0 * clean / present_candles
