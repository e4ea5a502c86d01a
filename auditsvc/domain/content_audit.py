"""Every single-series content rule over one run of candles, in one pass.

Guarantees: :class:`ContentAuditor` feeds each candle to the exact rules at once,
and to the spike and frozen-feed states, so a batch (:func:`audit_candles`) and a
stream of the same candles give the same findings. Findings come out in the order
they are confirmed: exact ones with their candle, a spike one candle later, a
frozen run when it reaches its length. Memory is O(``spike_window``).

Limits: candles must come in ascending open time (a candle not after the
previous one is still checked by the exact rules, but ignored by the others);
cross-timeframe checks need two series and live in ``aggregates.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditsvc.domain.anomalies import Anomaly
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle
from auditsvc.domain.candle_rules import check_candle
from auditsvc.domain.frozen_feed import FrozenFeedDetector
from auditsvc.domain.spikes import SpikeDetector
from auditsvc.domain.timeframes import Timeframe


class ContentAuditor:
    """The content rules' state for one series."""

    __slots__ = ("_config", "_frozen", "_spikes", "_tf")

    def __init__(self, tf: Timeframe, config: AnomalyConfig | None = None) -> None:
        self._tf = tf
        self._config = config or AnomalyConfig()
        self._spikes = SpikeDetector(tf, self._config)
        self._frozen = FrozenFeedDetector(tf, self._config)

    def push(self, candle: Candle, now_ms: int) -> list[Anomaly]:
        """Findings that ``candle``, arriving at ``now_ms``, makes certain."""
        out = check_candle(candle, self._tf, now_ms, self._config)
        out += self._spikes.push(candle)
        out += self._frozen.push(candle)
        return out


def audit_candles(
    candles: Iterable[Candle], tf: Timeframe, now_ms: int, config: AnomalyConfig | None = None
) -> list[Anomaly]:
    """Every finding of the single-series rules on ascending ``candles``, judged at ``now_ms``."""
    auditor = ContentAuditor(tf, config)
    return [a for c in candles for a in auditor.push(c, now_ms)]
