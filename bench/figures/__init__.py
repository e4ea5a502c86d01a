"""The figures, in run order. Each module has KEY, TITLE, TARGET and ``run(ctx)``."""

from __future__ import annotations

from types import ModuleType

from bench.figures import (
    f1_throughput,
    f2_memory,
    f3_incremental,
    f4_rpc,
    f5_forwarding,
    f6_fanout,
    f7_failover,
    f8_scale,
    f9_removal,
    f10_live_detection,
    f11_live_cost,
    f12_live_failover,
    f13_live_verdicts,
    f14_stale_verdicts,
    f15_take_office,
    f16_cold_layout,
    f17_heal_loop,
    f18_no_jam,
    f19_detection,
    f20_content_latency,
    f21_content_cost,
)

FIGURES: tuple[ModuleType, ...] = (
    f1_throughput,
    f2_memory,
    f3_incremental,
    f4_rpc,
    f5_forwarding,
    f6_fanout,
    f7_failover,
    f8_scale,
    f9_removal,
    f10_live_detection,
    f11_live_cost,
    f12_live_failover,
    f13_live_verdicts,
    f14_stale_verdicts,
    f15_take_office,
    f16_cold_layout,
    f17_heal_loop,
    f18_no_jam,
    f19_detection,
    f20_content_latency,
    f21_content_cost,
)
KEYS: tuple[str, ...] = tuple(m.KEY for m in FIGURES)
