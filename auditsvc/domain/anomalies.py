"""What a content rule reports: the stable reason codes and one finding.

Guarantees:

* :class:`AnomalyRule` values are stable names: the contract's ``AnomalyRule``
  enum is ``ANOMALY_RULE_`` + the name, and stored findings are keyed by it. New
  rules are only ever added.
* Every rule reports at most one :class:`Anomaly` per candle (open time) and
  rule, so ``(series, open_time_ms, rule)`` is a key: a cycle and the live tail
  that find the same fault produce the same key.
* ``field``, ``observed`` and ``expected`` are filled where the rule has them
  (``None`` otherwise); ``detail`` is one line for a human.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AnomalyRule(enum.Enum):
    """The reason code of a finding. See docs/CANDLE_RULES.md for each one."""

    PRICE_INVALID = "PRICE_INVALID"
    HIGH_BELOW_BODY = "HIGH_BELOW_BODY"
    LOW_ABOVE_BODY = "LOW_ABOVE_BODY"
    VOLUME_INVALID = "VOLUME_INVALID"
    TIME_MISALIGNED = "TIME_MISALIGNED"
    TIME_IN_FUTURE = "TIME_IN_FUTURE"
    CLOSE_TIME_INVALID = "CLOSE_TIME_INVALID"
    TRADES_WITHOUT_VOLUME = "TRADES_WITHOUT_VOLUME"
    TAKER_ABOVE_VOLUME = "TAKER_ABOVE_VOLUME"
    QUOTE_VOLUME_OUTSIDE_RANGE = "QUOTE_VOLUME_OUTSIDE_RANGE"
    PRICE_SPIKE = "PRICE_SPIKE"
    FROZEN_FEED = "FROZEN_FEED"
    AGGREGATE_MISMATCH = "AGGREGATE_MISMATCH"


# The rules that judge one candle alone, at once; the others need neighbours or children.
EXACT_RULES: frozenset[AnomalyRule] = frozenset(AnomalyRule) - {
    AnomalyRule.PRICE_SPIKE,
    AnomalyRule.FROZEN_FEED,
    AnomalyRule.AGGREGATE_MISMATCH,
}


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One finding on the candle opening at ``open_time_ms`` of one series."""

    open_time_ms: int
    rule: AnomalyRule
    detail: str
    # The candle field the finding is about ("high", "volume", "open_time", ...).
    field: str | None = None
    observed: float | None = None
    expected: float | None = None
