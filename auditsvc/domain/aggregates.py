"""AGGREGATE_MISMATCH: a higher-timeframe candle against the aggregate of its children.

Guarantees:

* :func:`child_timeframe` picks, among the configured timeframes, the largest
  (nearest smaller) one whose slots tile every slot of the higher one exactly:
  ``1m`` -> ``5m``, ``1h`` -> ``1d``, ``1d`` -> ``1w`` (both grids meet on Monday
  00:00 UTC), ``1d`` -> ``1M`` (every calendar month is whole days), never
  ``1w`` -> ``1M`` nor ``3d`` -> ``1w``.
* :func:`aggregate` is the exchange's own definition: open = first child's open,
  close = last child's close, high = max, low = min, volume = sum (``math.fsum``,
  so the order of children does not change it; ``inf`` past the largest float,
  which never agrees with a stored volume). The optional fields are summed
  when every child carries them.
* :func:`check_aggregate` never reports a mismatch it cannot prove: a missing or
  repeated child slot, or a child or parent with an invalid price or volume (their
  own rules report those), makes the result ``INCOMPLETE``. Prices must agree to
  ``price_rel_tol`` and the volume to ``volume_rel_tol`` (both relative, equal
  values always agree). A mismatch is one :class:`Anomaly` on the higher candle
  naming the first differing field (open, high, low, close, volume order) with
  the stored value and the aggregate; its detail lists every differing field.

Limits: the caller passes only settled candles (a forming higher candle differs
from its children by design) and the children inside the higher slot; children
outside it are ignored.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from auditsvc.domain.anomalies import Anomaly, AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.candle import Candle, has_valid_prices, is_volume
from auditsvc.domain.timeframes import Timeframe

_DAY_MS = 86_400_000
_FIELDS = ("open", "high", "low", "close", "volume")


def tiles(child: Timeframe, higher: Timeframe) -> bool:
    """Every ``higher`` slot is exactly a run of whole ``child`` slots."""
    if child.nominal_ms >= higher.nominal_ms:
        return False
    c = child.fixed_ms
    assert c is not None  # only 1M is not fixed, and 1M is never a child of anything
    if higher.fixed_ms is None:  # 1M: months are whole days, and days are whole child slots
        return _DAY_MS % c == 0
    return higher.fixed_ms % c == 0 and (higher.offset_ms - child.offset_ms) % c == 0


def child_timeframe(higher: Timeframe, configured: Iterable[Timeframe]) -> Timeframe | None:
    """The nearest smaller configured timeframe that tiles ``higher``, or None."""
    fits = [tf for tf in configured if tiles(tf, higher)]
    return max(fits, key=lambda tf: tf.nominal_ms, default=None)


def child_opens(higher: Timeframe, child: Timeframe, open_ms: int) -> list[int]:
    """The open times of the children of the ``higher`` slot opening at ``open_ms``."""
    return list(child.iter_opens(open_ms, higher.next_open(open_ms)))


def _sum(values: Iterable[float | int]) -> float:
    """An exact sum; inf when it exceeds the largest float (fsum raises there)."""
    try:
        return math.fsum(values)
    except OverflowError:
        return math.inf


def _sum_optional(values: Sequence[float | int | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return _sum(v for v in values if v is not None)


def aggregate(children: Sequence[Candle], open_ms: int | None = None) -> Candle:
    """The candle the children add up to; ``open_ms`` defaults to the first child's.

    Children must be in ascending order with valid prices and volumes; raises
    ValueError when there are none.
    """
    if not children:
        raise ValueError("no children to aggregate")
    highs = [c.high for c in children if c.high is not None]
    lows = [c.low for c in children if c.low is not None]
    trades = _sum_optional([c.trade_count for c in children])
    return Candle(
        open_time_ms=children[0].open_time_ms if open_ms is None else open_ms,
        open=children[0].open,
        high=max(highs),
        low=min(lows),
        close=children[-1].close,
        volume=_sum(c.volume for c in children if c.volume is not None),
        trade_count=None if trades is None else int(trades),
        taker_buy_volume=_sum_optional([c.taker_buy_volume for c in children]),
        quote_volume=_sum_optional([c.quote_volume for c in children]),
    )


class AggregateStatus(enum.Enum):
    CONSISTENT = "consistent"
    MISMATCH = "mismatch"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class AggregateCheck:
    """The outcome for one higher candle; ``finding`` is set only on MISMATCH."""

    status: AggregateStatus
    reason: str
    finding: Anomaly | None = None


def _agrees(stored: float, aggregated: float, tol: float) -> bool:
    # A sum past the largest float (inf) never agrees with a stored finite value.
    if not math.isfinite(aggregated):
        return False
    return abs(stored - aggregated) <= tol * max(abs(stored), abs(aggregated))


def check_aggregate(
    higher_tf: Timeframe,
    higher: Candle,
    child_tf: Timeframe,
    children: Iterable[Candle],
    config: AnomalyConfig | None = None,
) -> AggregateCheck:
    """Compare a settled ``higher`` candle with the aggregate of its ``child_tf`` children."""
    config = config or AnomalyConfig()
    if not tiles(child_tf, higher_tf):
        raise ValueError(f"{child_tf.name} does not tile {higher_tf.name}")
    incomplete = AggregateStatus.INCOMPLETE
    if not (has_valid_prices(higher) and is_volume(higher.volume)):
        return AggregateCheck(incomplete, "the higher candle has an invalid value")
    expected = child_opens(higher_tf, child_tf, higher.open_time_ms)
    wanted = set(expected)
    by_open: dict[int, Candle] = {}
    for c in children:
        if c.open_time_ms not in wanted:
            continue
        if c.open_time_ms in by_open:
            return AggregateCheck(incomplete, f"child slot {c.open_time_ms} is repeated")
        if not (has_valid_prices(c) and is_volume(c.volume)):
            return AggregateCheck(incomplete, f"child {c.open_time_ms} has an invalid value")
        by_open[c.open_time_ms] = c
    if len(by_open) < len(expected):
        missing = len(expected) - len(by_open)
        return AggregateCheck(incomplete, f"{missing} of {len(expected)} children missing")
    agg = aggregate([by_open[t] for t in expected], higher.open_time_ms)
    diffs = []
    for name in _FIELDS:
        stored, summed = getattr(higher, name), getattr(agg, name)
        tol = config.volume_rel_tol if name == "volume" else config.price_rel_tol
        if not _agrees(stored, summed, tol):
            diffs.append((name, stored, summed))
    if not diffs:
        return AggregateCheck(AggregateStatus.CONSISTENT, f"matches {len(expected)} children")
    name, stored, summed = diffs[0]
    listed = "; ".join(f"{n} {s!r} != {a!r}" for n, s, a in diffs)
    detail = f"{listed} (stored vs aggregate of {len(expected)} {child_tf.name} candles)"
    finding = Anomaly(
        higher.open_time_ms, AnomalyRule.AGGREGATE_MISMATCH, detail, name, stored, summed
    )
    return AggregateCheck(AggregateStatus.MISMATCH, detail, finding)
