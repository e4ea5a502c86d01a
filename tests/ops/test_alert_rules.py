"""promtool checks of the Prometheus alerting rules and their unit tests in k8s/monitoring."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERTS_TEST = MONITORING / "alerts_test.yaml"
TIMEOUT = 60


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool, failing (never skipping) when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not on PATH: `make setup` installs it (Debian package prometheus)")
    return subprocess.run(
        [binary, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def alert_names() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def isolated_cases(tmp_path: Path, alert: str, firing: bool, expr: str | None) -> Path:
    """Write alerts_test.yaml cut down to one alert's firing (or quiet) cases into tmp_path.

    With ``expr`` the alert's expression is replaced in the copied rules, so that the
    cases can be shown to fail on a rule that never (or always) fires.
    """
    rules = yaml.safe_load(ALERTS.read_text())
    if expr is not None:
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = expr
    (tmp_path / ALERTS.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    suite = yaml.safe_load(ALERTS_TEST.read_text())
    kept = []
    for test in suite["tests"]:
        cases = [
            c
            for c in test.get("alert_rule_test", [])
            if c["alertname"] == alert and bool(c.get("exp_alerts")) is firing
        ]
        if cases:
            kept.append({**test, "alert_rule_test": cases, "promql_expr_test": []})
    kind = "firing" if firing else "non-firing"
    assert kept, f"alerts_test.yaml has no {kind} case for {alert}"
    path = tmp_path / ALERTS_TEST.name
    path.write_text(yaml.safe_dump({**suite, "tests": kept}, sort_keys=False))
    return path


class TestPromtool:
    """The rules file is valid and its promtool unit tests pass."""

    def test_check_rules(self) -> None:
        """`promtool check rules` accepts alerts.yaml."""
        result = promtool("check", "rules", ALERTS)
        assert result.returncode == 0, output(result)

    def test_unit_tests(self) -> None:
        """`promtool test rules` passes alerts_test.yaml."""
        result = promtool("test", "rules", ALERTS_TEST)
        assert result.returncode == 0, output(result)

    def test_dashboard_queries_parse(self, tmp_path: Path) -> None:
        """Every dashboard query is valid PromQL (checked as recording rules)."""
        dashboard = json.loads((MONITORING / "dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        rules = [{"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(exprs)]
        path = tmp_path / "dashboard_rules.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = promtool("check", "rules", path)
        assert result.returncode == 0, output(result)


class TestUnitTestsHaveTeeth:
    """Each alert has firing and non-firing cases that a broken rule would fail."""

    @pytest.mark.parametrize("alert", alert_names())
    def test_firing_cases_catch_a_dead_rule(self, alert: str, tmp_path: Path) -> None:
        """The alert's firing cases pass, and fail once its expression never matches."""
        result = promtool("test", "rules", isolated_cases(tmp_path, alert, True, None))
        assert result.returncode == 0, output(result)
        result = promtool("test", "rules", isolated_cases(tmp_path, alert, True, "vector(1) == 0"))
        assert result.returncode != 0, output(result)

    @pytest.mark.parametrize("alert", alert_names())
    def test_quiet_cases_catch_a_noisy_rule(self, alert: str, tmp_path: Path) -> None:
        """The alert's non-firing cases pass, and fail once its expression always matches."""
        result = promtool("test", "rules", isolated_cases(tmp_path, alert, False, None))
        assert result.returncode == 0, output(result)
        result = promtool("test", "rules", isolated_cases(tmp_path, alert, False, "vector(1)"))
        assert result.returncode != 0, output(result)
