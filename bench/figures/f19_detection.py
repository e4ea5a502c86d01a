"""19. Detection quality: the content rules on generated series with injected faults.

No database: the domain rules run directly, in a worker thread, on series from
``auditsvc/devtools/market_data.py`` (heavy-tailed, clustered, with quiet flat
stretches that still trade and real jumps that persist). For each timeframe of
``quality_timeframes``, ``quality_candles`` clean candles are audited as they are
(every finding there is a false positive), then again with ``quality_per_rule``
faults of every single-series rule at random positions
(``auditsvc/devtools/fault_injection.py``). Higher series are aggregated from the
clean ones (``1s``→``1m``; ``1m``→``5m``→``1h`` and ``1m``→``1h``; ``1h``→``1d``→``1w``
and ``1d``→``1M``; ``1d``→``1w`` and ``1d``→``1M``), audited clean too, and a third of
their candles changed in one field for AGGREGATE_MISMATCH, with one child of every
seventh removed (that higher candle must be INCOMPLETE, never a mismatch).

Targets (issue 21): exact rules and aggregates 100 % recall with no false
positive; SPIKE and FROZEN_FEED recall and precision >= 99 % on every timeframe;
at most 1 finding per million clean candles. A frozen run is counted per candle
(the target) and whole (reported). The generator's market features are measured
on each clean series and reported beside the figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from auditsvc.devtools.detection_quality import (
    AggregateQuality,
    SeriesQuality,
    findings,
    market_features,
    measure_aggregates,
    measure_series,
    now_after,
)
from auditsvc.devtools.market_data import generate
from auditsvc.domain.anomalies import EXACT_RULES, AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.timeframes import parse_timeframe
from bench.context import Context
from bench.figures.common import MET, MISSED, result

KEY = "detection_quality"
TITLE = "Detection quality of the candle content rules"
TARGET = (
    "exact rules and aggregates: recall 100 %, no false positive; SPIKE and FROZEN_FEED: "
    "recall and precision >= 99 % per timeframe; <= 1 finding per million clean candles"
)
T0 = 1_704_067_200_000  # Monday 2024-01-01T00:00Z
# (child, higher) pairs checked from each generated timeframe, higher ones built in order.
CHAINS: dict[str, tuple[tuple[str, str], ...]] = {
    "1s": (("1s", "1m"),),
    "1m": (("1m", "5m"), ("5m", "1h"), ("1m", "1h")),
    "1h": (("1h", "1d"), ("1d", "1w"), ("1d", "1M")),
    "1d": (("1d", "1w"), ("1d", "1M")),
}
STATISTICAL = (AnomalyRule.PRICE_SPIKE, AnomalyRule.FROZEN_FEED)


async def run(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    series: list[SeriesQuality] = []
    aggregates: list[AggregateQuality] = []
    features: dict[str, Any] = {}
    clean_candles = clean_findings = 0
    for i, name in enumerate(sz.quality_timeframes):
        # CPU-bound work goes to a thread, so that the runner's timeout can end the figure.
        seed = 1_000 + i
        tf = parse_timeframe(name)
        clean = await asyncio.to_thread(generate, seed, tf, T0, sz.quality_candles)
        shape = await asyncio.to_thread(market_features, clean)
        features[name] = dataclasses.asdict(shape)
        q = await asyncio.to_thread(measure_series, clean, name, sz.quality_per_rule, seed + 1)
        series.append(q)
        clean_candles += q.candles
        clean_findings += q.clean_findings
        built: dict[str, list[Candle]] = {name: clean}
        for child, higher in CHAINS.get(name, ()):
            a, stored = await asyncio.to_thread(
                measure_aggregates, built[child], child, higher, seed
            )
            aggregates.append(a)
            if higher not in built and stored:
                built[higher] = stored
                now = now_after(stored)
                found = await asyncio.to_thread(findings, stored, parse_timeframe(higher), now)
                clean_candles += len(stored)
                clean_findings += len(found)
    return _report(series, aggregates, features, clean_candles, clean_findings)


def _report(
    series: list[SeriesQuality],
    aggregates: list[AggregateQuality],
    features: dict[str, Any],
    clean_candles: int,
    clean_findings: int,
) -> dict[str, Any]:
    exact_ok = all(
        r.recall == 1.0 and r.false_positives == 0
        for q in series
        for r in q.rows
        if r.rule in EXACT_RULES
    )
    aggregates_ok = all(
        a.found == a.injected and a.false_positives == 0 and a.incomplete_as_mismatch == 0
        for a in aggregates
    )
    stat = {(q.timeframe, r.rule.name): r for q in series for r in q.rows if r.rule in STATISTICAL}
    stat_ok = all(r.recall >= 0.99 and r.precision >= 0.99 for r in stat.values())
    per_million = clean_findings / clean_candles * 1e6 if clean_candles else float("nan")
    met = exact_ok and aggregates_ok and stat_ok and per_million <= 1.0
    worst = min((r.recall for r in stat.values()), default=float("nan"))
    spikes = ", ".join(
        f"{tf} {r.found}/{r.injected}" for (tf, rule), r in stat.items() if rule == "PRICE_SPIKE"
    )
    frozen = ", ".join(f"{q.timeframe} {q.frozen_runs_found}/{q.frozen_runs}" for q in series)
    exact = [(r.found, r.injected, r.false_positives) for q in series for r in q.rows]
    exact_sum = [sum(x) for x in zip(*exact, strict=True)] if exact else [0, 0, 0]
    agg_sum = [sum(x) for x in zip(*[(a.found, a.injected) for a in aggregates], strict=True)]
    summary = (
        f"{clean_findings} findings on {clean_candles:,} clean candles "
        f"({per_million:.2f} per million); SPIKE {spikes}; frozen runs whole {frozen}; "
        f"all single-series faults {exact_sum[0]:,}/{exact_sum[1]:,} found, "
        f"{exact_sum[2]} false; aggregates {agg_sum[0] if agg_sum else 0:,}/"
        f"{agg_sum[1] if agg_sum else 0:,}"
    )
    return result(
        target=TARGET,
        summary=summary,
        verdict=MET if met else MISSED,
        ratio=worst,
        ratio_of="lowest recall of SPIKE and FROZEN_FEED over the timeframes",
        details={
            "clean_candles": clean_candles,
            "clean_findings": clean_findings,
            "clean_findings_per_million": round(per_million, 3),
            "exact_rules_met": exact_ok,
            "aggregates_met": aggregates_ok,
            "statistical_met": stat_ok,
            "series": [_series_row(q) for q in series],
            "aggregates": [dataclasses.asdict(a) for a in aggregates],
            "market_features": {
                tf: {k: round(v, 4) if isinstance(v, float) else v for k, v in f.items()}
                for tf, f in features.items()
            },
        },
    )


def _series_row(q: SeriesQuality) -> dict[str, Any]:
    return {
        "timeframe": q.timeframe,
        "candles": q.candles,
        "clean_findings": q.clean_findings,
        "frozen_runs_found_whole": f"{q.frozen_runs_found}/{q.frozen_runs}",
        "rules": {
            r.rule.name: {
                "injected": r.injected,
                "found": r.found,
                "false_positives": r.false_positives,
                "recall": round(r.recall, 4),
                "precision": round(r.precision, 4),
            }
            for r in q.rows
        },
        "missed": [f"{rule.name}@{t}" for t, rule in q.missed[:10]],
    }
