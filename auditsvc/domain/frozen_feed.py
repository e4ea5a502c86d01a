"""FROZEN_FEED: a writer that repeats one candle instead of the market's.

The rule: a run of at least ``frozen_min_run`` candles in consecutive slots with
identical open, high, low and close and either all a zero volume, or all the same
non-zero volume. Flat candles whose volume varies are what an illiquid market
looks like and are never flagged, however long the run.

Guarantees:

* :class:`FrozenFeedDetector` takes candles in ascending order and reports the
  whole run the moment it reaches ``frozen_min_run`` candles, then each further
  candle of the run as it arrives: one finding per frozen candle, so the validity
  score counts each one.
* In a repeated non-zero-volume run the first candle is the original the writer
  copies, so it is not reported; in a zero-volume run every candle is.
* State is O(1); the batch helper :func:`detect_frozen` gives the same findings.

Limits: a gap, an invalid price or volume, or any change of a value ends a run;
a run shorter than ``frozen_min_run`` is not reported even if a writer froze.
Illiquid markets do print runs of zero-volume flat candles (no trade in the
slot); ``frozen_min_run`` is what separates them from a frozen writer.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle, has_valid_prices, is_volume
from auditsvc.domain.timeframes import Timeframe

_Key = tuple[float | None, float | None, float | None, float | None, float | None]


class FrozenFeedDetector:
    """Streaming FROZEN_FEED state of one series: :meth:`push` each candle in order."""

    __slots__ = ("_key", "_last_open", "_min_run", "_run", "_start", "_tf")

    def __init__(self, tf: Timeframe, config: AnomalyConfig | None = None) -> None:
        self._tf = tf
        self._min_run = (config or AnomalyConfig()).frozen_min_run
        self._key: _Key | None = None
        self._start = 0
        self._run = 0
        self._last_open: int | None = None

    def push(self, candle: Candle) -> list[Anomaly]:
        """Take the next candle; return the frozen candles it reveals, if any.

        A candle not after the previous one is ignored (a re-read of a stored slot).
        """
        last, t = self._last_open, candle.open_time_ms
        if last is not None and t <= last:
            return []
        self._last_open = t
        if not (has_valid_prices(candle) and is_volume(candle.volume)):
            self._key, self._run = None, 0
            return []
        key: _Key = (*candle.ohlc, candle.volume)
        if self._run and key == self._key and last is not None and t == self._tf.next_open(last):
            self._run += 1
        else:
            self._key, self._start, self._run = key, t, 1
        if self._run < self._min_run:
            return []
        zero = candle.volume == 0
        if self._run == self._min_run:
            first = 0 if zero else 1
            opens = [self._tf.shift(self._start, i) for i in range(first, self._run)]
        else:
            opens = [t]
        return [self._finding(o, candle.volume, zero) for o in opens]

    def _finding(self, open_ms: int, volume: float | None, zero: bool) -> Anomaly:
        what = "zero volume" if zero else f"the same volume {volume!r}"
        detail = (
            f"part of a run of {self._run}+ identical {self._tf.name} candles with {what} "
            f"since {self._start}"
        )
        return Anomaly(open_ms, AnomalyRule.FROZEN_FEED, detail, "volume", volume)


def detect_frozen(
    candles: Iterable[Candle], tf: Timeframe, config: AnomalyConfig | None = None
) -> list[Anomaly]:
    """Every frozen candle in an ascending run of candles."""
    detector = FrozenFeedDetector(tf, config)
    return [a for c in candles for a in detector.push(c)]
