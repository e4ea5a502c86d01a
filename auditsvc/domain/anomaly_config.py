"""The parameters of the candle content rules, in one frozen, validated dataclass.

Guarantees: every field has a documented default and :meth:`AnomalyConfig.__post_init__`
rejects a value outside its range with ``ValueError``, so a rule never runs with
a nonsensical parameter. The defaults were chosen on the seeded market-like
series of ``auditsvc/devtools/market_data.py`` (heavy tails, volatility
clustering, quiet stretches, persistent jumps) so that clean data yields no
finding; docs/CANDLE_RULES.md gives the figures.

Limits: one configuration serves every timeframe; the statistical rules scale
with each series' own recent moves, but ``frozen_min_run`` counts candles, so it
spans an hour on ``1m`` and two months on ``1d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    """Parameters of the exact, statistical and cross-timeframe candle rules."""

    price_rel_tol: float = 1e-9
    """Relative tolerance when two prices must be equal or ordered (floating point only)."""

    quote_rel_tol: float = 1e-6
    """Relative slack on ``quote_volume / volume`` lying within ``[low, high]``:
    exchanges round the quote volume to a few decimals."""

    future_grace_ms: int = 5_000
    """How far past ``now + one slot`` an open time may lie before TIME_IN_FUTURE
    (clock skew between the writer and this service)."""

    close_time_offset_ms: int = -1
    """Expected close time = next slot's open + this; Binance uses -1 ms."""

    spike_window: int = 60
    """Trailing non-zero close-to-close moves whose median absolute log return is the scale."""

    spike_min_history: int = 20
    """Non-zero moves a series needs in its window before any candle is judged a spike."""

    spike_multiple: float = 20.0
    """A spike departs from the previous close by more than this many times the scale."""

    spike_min_move: float = 0.10
    """...and by more than this fraction (0.10 = 10 %) whatever the scale, so that a
    quiet (flat) stretch, whose scale is 0, does not make every tick a spike. On a
    million clean generated 1h candles the largest reverted move was 9.9 %."""

    spike_revert_fraction: float = 0.25
    """The next candle reverts when its close is back within this fraction of the
    excursion from the previous close, and its extreme in the spike's direction
    stays below the same fraction."""

    spike_apart_multiple: float = 1.5
    """The market may move on after a bad print: when the next candle's close and its
    extreme in the spike's direction both lie more than this many thresholds back from
    the spike's extreme, twice ``spike_revert_fraction`` is enough (``inf``: never)."""

    frozen_min_run: int = 60
    """Consecutive identical candles (zero or repeated volume) that make a frozen feed."""

    volume_rel_tol: float = 1e-6
    """Relative tolerance between a higher candle's volume and the sum of its children's."""

    def __post_init__(self) -> None:
        for name in ("price_rel_tol", "quote_rel_tol", "volume_rel_tol"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.future_grace_ms < 0:
            raise ValueError("future_grace_ms must be >= 0")
        if self.spike_window < 2 or not 1 <= self.spike_min_history <= self.spike_window:
            raise ValueError("need spike_window >= 2 and 1 <= spike_min_history <= spike_window")
        if not (math.isfinite(self.spike_multiple) and self.spike_multiple > 0):
            raise ValueError("spike_multiple must be > 0")
        if not (math.isfinite(self.spike_min_move) and self.spike_min_move > 0):
            raise ValueError("spike_min_move must be > 0")
        if not 0 < self.spike_revert_fraction < 1:
            raise ValueError("spike_revert_fraction must be in (0, 1)")
        if not self.spike_apart_multiple > 0:  # also rejects NaN; inf turns the relief off
            raise ValueError("spike_apart_multiple must be > 0")
        if self.frozen_min_run < 2:
            raise ValueError("frozen_min_run must be >= 2")
