"""Detection quality of the content rules on generated series: recall, precision, false positives.

``python -m auditsvc.devtools.detection_quality`` prints, per timeframe, each rule's
recall and precision on a series with injected faults, and the findings on the
same series left clean (per million candles). Bench figure 19
(``bench/figures/f19_detection.py``) and docs/CANDLE_RULES.md quote these figures;
the unit tests assert the same properties on smaller series.

Guarantees: deterministic for given arguments (seeded generator and injection).
A fault counts once per faulty candle; a finding counts as a true positive only
with the injected rule at the injected candle's open time. A frozen run is also
counted whole (:func:`frozen_runs`): found only when every candle of it is.
Aggregates (:func:`measure_aggregates`) are checked on higher series built from
the clean lower one, a third of them changed in one field and one child of every
seventh removed: those must come out ``INCOMPLETE``, never a mismatch.

Limits: it measures the rules against the generator's model of a market, not
against a real exchange's archive; :func:`market_features` says with numbers how
much of a market the generated series has.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from auditsvc.devtools.fault_injection import SERIES_RULES, inject, inject_mismatches
from auditsvc.devtools.market_data import aggregate_up, generate
from auditsvc.domain.aggregates import AggregateStatus, check_aggregate
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.content_audit import audit_candles
from auditsvc.domain.timeframes import Timeframe, parse_timeframe

_T0 = 1_704_067_200_000  # Monday 2024-01-01T00:00Z
Key = tuple[int, AnomalyRule]


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


@dataclass(frozen=True, slots=True)
class SeriesQuality:
    """One timeframe's run: per-rule quality, frozen runs whole, the clean findings."""

    timeframe: str
    candles: int
    rows: list[RuleQuality]
    frozen_runs: int
    frozen_runs_found: int
    clean_findings: int
    missed: list[Key]
    """The injected faults not found, for a look at why."""


def now_after(candles: Sequence[Candle]) -> int:
    """A clock just past the last candle's close: every candle is settled, none in the future."""
    last = candles[-1]
    return (last.close_time_ms if last.close_time_ms is not None else last.open_time_ms) + 1


def findings(candles: Sequence[Candle], tf: Timeframe, now_ms: int) -> set[Key]:
    return {(a.open_time_ms, a.rule) for a in audit_candles(candles, tf, now_ms)}


def frozen_runs(truth: dict[int, AnomalyRule], tf: Timeframe) -> list[list[int]]:
    """The injected frozen runs, each its candles' open times (faults are margins apart)."""
    runs: list[list[int]] = []
    for t in sorted(o for o, r in truth.items() if r is AnomalyRule.FROZEN_FEED):
        if runs and tf.next_open(runs[-1][-1]) == t:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def measure_series(
    clean: Sequence[Candle], timeframe: str, per_rule: int, seed: int, spike_factor: float = 1.5
) -> SeriesQuality:
    """Every single-series rule on ``clean``, then on a copy with ``per_rule`` faults of each."""
    tf = parse_timeframe(timeframe)
    now = now_after(clean)
    clean_findings = len(findings(clean, tf, now))
    injected = inject(clean, tf, now, seed, per_rule, spike_factor=spike_factor)
    found = findings(injected.candles, tf, now)
    truth = set(injected.truth.items())
    hits = Counter(r for _, r in found & truth)
    wrong = Counter(r for _, r in found - truth)
    total = Counter(r for _, r in truth)
    runs = frozen_runs(injected.truth, tf)
    whole = sum(all((t, AnomalyRule.FROZEN_FEED) in found for t in run) for run in runs)
    return SeriesQuality(
        timeframe,
        len(clean),
        [RuleQuality(r, total[r], hits[r], wrong[r]) for r in SERIES_RULES],
        len(runs),
        whole,
        clean_findings,
        sorted(truth - found, key=lambda k: k[0]),
    )


def measure(
    timeframe: str, count: int, per_rule: int, seed: int = 1, spike_factor: float = 1.5
) -> tuple[list[RuleQuality], int]:
    """Per-rule quality with ``per_rule`` faults each, and the findings on the clean series."""
    clean = generate(seed, parse_timeframe(timeframe), _T0, count)
    q = measure_series(clean, timeframe, per_rule, seed + 1, spike_factor)
    return q.rows, q.clean_findings


@dataclass(frozen=True, slots=True)
class AggregateQuality:
    """AGGREGATE_MISMATCH on one (child, higher) pair."""

    child: str
    higher: str
    checked: int
    """Higher candles compared (complete ones)."""
    injected: int
    found: int
    false_positives: int
    incomplete: int
    """Higher candles with a child removed: each must be INCOMPLETE."""
    incomplete_as_mismatch: int
    clean_findings: int
    """Mismatches on the unchanged higher series (must be 0)."""


def measure_aggregates(
    children: Sequence[Candle], child: str, higher: str, seed: int
) -> tuple[AggregateQuality, list[Candle]]:
    """The rule on ``higher`` candles aggregated from ``children``; also returns those candles."""
    ctf, htf = parse_timeframe(child), parse_timeframe(higher)
    stored = aggregate_up(children, ctf, htf)
    opens = [c.open_time_ms for c in children]

    def kids(c: Candle, among: Sequence[Candle], times: Sequence[int]) -> Sequence[Candle]:
        lo = bisect.bisect_left(times, c.open_time_ms)
        return among[lo : bisect.bisect_left(times, htf.next_open(c.open_time_ms), lo)]

    clean = sum(
        check_aggregate(htf, c, ctf, kids(c, children, opens)).finding is not None for c in stored
    )
    injected = inject_mismatches(stored, seed, len(stored) // 3)
    dropped = {c.open_time_ms for c in stored[::7]}
    kept = [c for c in children if c.open_time_ms not in dropped]  # each one's first child
    kept_opens = [c.open_time_ms for c in kept]
    found: set[int] = set()
    as_mismatch = 0
    for c in injected.candles:
        check = check_aggregate(htf, c, ctf, kids(c, kept, kept_opens))
        if c.open_time_ms in dropped:
            as_mismatch += check.status is not AggregateStatus.INCOMPLETE
        elif check.finding is not None:
            found.add(c.open_time_ms)
    truth = set(injected.truth) - dropped
    quality = AggregateQuality(
        child,
        higher,
        len(stored) - len(dropped),
        len(truth),
        len(found & truth),
        len(found - truth),
        len(dropped),
        as_mismatch,
        clean,
    )
    return quality, stored


@dataclass(frozen=True, slots=True)
class MarketFeatures:
    """What makes a generated series look like a market, measured on the series itself."""

    candles: int
    kurtosis: float
    """Of the non-zero close-to-close log moves; a Gaussian has 3."""
    clustering: float
    """Lag-1 autocorrelation of the absolute moves (0 without volatility clustering)."""
    flat_traded: float
    """Share of candles with open = high = low = close and a volume > 0."""
    flat_traded_volumes_distinct: float
    """Distinct volumes among those flat candles, as a share of them."""
    longest_flat_run: int
    """Consecutive flat candles (traded or not) at one price, the longest."""
    zero_volume: float
    """Share of candles with no trade at all."""
    longest_zero_run: int
    big_moves: int
    """Close-to-close moves larger than 10 x the median non-zero move."""
    big_moves_kept: float
    """Share of those the next close keeps at least half of: jumps, not spikes."""


def market_features(candles: Sequence[Candle]) -> MarketFeatures:
    """Measure heavy tails, clustering, quiet stretches and persistent jumps in ``candles``."""
    closes = [c.close or 0.0 for c in candles]
    moves = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    moving = [m for m in moves if m]
    sd = statistics.pstdev(moving)
    kurtosis = statistics.fmean(m**4 for m in moving) / sd**4
    absolute = [abs(m) for m in moves]
    clustering = statistics.correlation(absolute[:-1], absolute[1:])
    flat = [c.open == c.high == c.low == c.close for c in candles]
    traded = [c.volume for c, f in zip(candles, flat, strict=True) if f and c.volume]
    median = statistics.median(abs(m) for m in moving)
    big = [i for i, m in enumerate(moves[:-1]) if abs(m) > 10 * median]
    kept = sum(abs(moves[i] + moves[i + 1]) >= abs(moves[i]) / 2 for i in big)
    return MarketFeatures(
        len(candles),
        kurtosis,
        clustering,
        len(traded) / len(candles),
        len(set(traded)) / len(traded) if traded else 0.0,
        _longest(flat),
        sum(c.volume == 0 for c in candles) / len(candles),
        _longest([c.volume == 0 for c in candles]),
        len(big),
        kept / len(big) if big else 0.0,
    )


def _longest(flags: Sequence[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeframe", default="1m")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--per-rule", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spike-factor", type=float, default=1.5)
    args = parser.parse_args(argv)
    clean = generate(args.seed, parse_timeframe(args.timeframe), _T0, args.count)
    q = measure_series(clean, args.timeframe, args.per_rule, args.seed + 1, args.spike_factor)
    print(f"{args.timeframe}: {args.count} candles, seed {args.seed}")
    per_million = q.clean_findings / args.count * 1e6
    print(f"clean series: {q.clean_findings} findings ({per_million:.2f} per million candles)")
    print(f"{'rule':28} {'injected':>8} {'found':>7} {'false+':>6} {'recall':>8} {'precision':>9}")
    for r in q.rows:
        print(
            f"{r.rule.name:28} {r.injected:8} {r.found:7} {r.false_positives:6} "
            f"{r.recall:8.2%} {r.precision:9.2%}"
        )
    print(f"frozen runs found whole: {q.frozen_runs_found} / {q.frozen_runs}")
    for t, rule in q.missed[:20]:
        print(f"missed: {rule.name} at {t}")


if __name__ == "__main__":
    main()
