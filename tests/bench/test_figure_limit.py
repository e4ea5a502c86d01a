"""Each figure's time limit: --timeout for all, else the figure's own, else 900 s."""

from __future__ import annotations

import types

from bench.figures import f1_throughput, f8_scale, f10_live_detection
from bench.runner import figure_limit


def test_the_command_line_wins() -> None:
    assert figure_limit(f8_scale, 120.0, tiny=False) == 120.0
    assert figure_limit(f8_scale, 120.0, tiny=True) == 120.0


def test_figures_default_to_900_s_unless_they_need_more() -> None:
    assert figure_limit(f1_throughput, None, tiny=False) == 900.0
    # Figure 8 at 30,000 series took 833 s: `make bench` must not cut it off at 900.
    assert figure_limit(f8_scale, None, tiny=False) >= 2400.0
    assert figure_limit(types.ModuleType("bare"), None, tiny=False) == 900.0


def test_tiny_runs_get_a_minute_per_figure() -> None:
    assert figure_limit(f8_scale, None, tiny=True) == 60.0


def test_a_figure_threshold_is_not_taken_for_its_run_limit() -> None:
    # Figure 10's LIMIT_S is its 1.5 s detection target, not how long it may run.
    assert figure_limit(f10_live_detection, None, tiny=False) == 900.0
