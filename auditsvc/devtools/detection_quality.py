"""Detection quality of the content rules on generated series: recall, precision, false positives.

``python -m auditsvc.devtools.detection_quality`` prints, per timeframe, each rule's
recall and precision on a series with injected faults, and the findings on the
same series left clean (per million candles). The bench and docs/CANDLE_RULES.md
quote these figures; the unit tests assert the same properties on smaller series.

Guarantees: deterministic for given arguments (seeded generator and injection).
A fault counts once per faulty candle; a finding counts as a true positive only
with the injected rule at the injected candle's open time.

Limits: it measures the rules against the generator's model of a market, not
against a real exchange's archive.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass

from auditsvc.devtools.fault_injection import SERIES_RULES, inject
from auditsvc.devtools.market_data import generate
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.content_audit import audit_candles
from auditsvc.domain.timeframes import parse_timeframe

_T0 = 1_704_067_200_000  # Monday 2024-01-01T00:00Z


@dataclass(frozen=True, slots=True)
class RuleQuality:
    rule: AnomalyRule
    injected: int
    found: int
    false_positives: int

    @property
    def recall(self) -> float:
        return self.found / self.injected if self.injected else 1.0

    @property
    def precision(self) -> float:
        total = self.found + self.false_positives
        return self.found / total if total else 1.0


def measure(
    timeframe: str, count: int, per_rule: int, seed: int = 1, spike_factor: float = 1.5
) -> tuple[list[RuleQuality], int]:
    """Per-rule quality with ``per_rule`` faults each, and the findings on the clean series."""
    tf = parse_timeframe(timeframe)
    clean = generate(seed, tf, _T0, count)
    last = clean[-1].close_time_ms
    now = (last if last is not None else clean[-1].open_time_ms) + 1
    clean_findings = len(audit_candles(clean, tf, now))
    injected = inject(clean, tf, now, seed + 1, per_rule, spike_factor=spike_factor)
    found = {(a.open_time_ms, a.rule) for a in audit_candles(injected.candles, tf, now)}
    truth = set(injected.truth.items())
    hits = Counter(r for _, r in found & truth)
    wrong = Counter(r for _, r in found - truth)
    total = Counter(r for _, r in truth)
    rows = [RuleQuality(r, total[r], hits[r], wrong[r]) for r in SERIES_RULES]
    return rows, clean_findings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeframe", default="1m")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--per-rule", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spike-factor", type=float, default=1.5)
    args = parser.parse_args(argv)
    rows, clean = measure(args.timeframe, args.count, args.per_rule, args.seed, args.spike_factor)
    print(f"{args.timeframe}: {args.count} candles, seed {args.seed}")
    print(f"clean series: {clean} findings ({clean / args.count * 1e6:.2f} per million candles)")
    print(f"{'rule':28} {'injected':>8} {'found':>7} {'false+':>6} {'recall':>8} {'precision':>9}")
    for q in rows:
        print(
            f"{q.rule.name:28} {q.injected:8} {q.found:7} {q.false_positives:6} "
            f"{q.recall:8.2%} {q.precision:9.2%}"
        )


if __name__ == "__main__":
    main()
