"""`python -m bench --tiny` runs end to end and reports all figures.

No timing is asserted: the tiny sizes only prove the harness works. The run
writes to a temporary directory and must leave bench/results/latest.json and
docs/PERFORMANCE.md untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIGURES = (
    "audit_throughput",
    "memory",
    "incremental_cost",
    "rpc_speed",
    "forwarding",
    "stream_fanout",
    "failover",
    "scale",
    "removal",
    "live_detection",
    "live_cost",
    "live_failover",
    "live_verdicts",
    "stale_verdicts",
    "take_office",
    "cold_layout",
    "heal_loop",
    "no_jam",
    "detection_quality",
    "content_latency",
    "content_cost",
)
PROTECTED = (REPO / "bench" / "results" / "latest.json", REPO / "docs" / "PERFORMANCE.md")


def _fingerprint(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


# Figures 13 and 14 add 20-30 s each at tiny sizes, 17 and 18 about 25 and 15 s
# (60 s each at most: the runner's tiny limit per figure).
@pytest.mark.timeout(600)
def test_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    before = {p: _fingerprint(p) for p in PROTECTED}
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(
        "# Prose kept\n\n<!-- bench:start -->\nSTALE-BLOCK\n<!-- bench:end -->\n\nAfter.\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--output", str(tmp_path), "--doc", str(doc)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["tiny"] is True
    assert set(results["figures"]) == set(FIGURES)
    for key, figure in results["figures"].items():
        if figure["measured"]:
            assert figure["verdict"] in ("met", "met (stretch)", "missed"), key
            assert figure["summary"] and figure["target"], key
        else:
            assert figure["reason"], f"{key} is not measured and says not why"
    for field in ("cores_logical", "memory_gb", "cpu_model"):
        assert results["machine"][field], field
    for field in ("python", "grpcio", "pymongo", "server_version"):
        assert results["versions"][field], field

    text = doc.read_text()
    assert text.startswith("# Prose kept") and text.rstrip().endswith("After.")
    assert "STALE-BLOCK" not in text  # ("old" is in "cold cycle")
    for figure in results["figures"].values():
        assert figure["title"] in text
    assert {p: _fingerprint(p) for p in PROTECTED} == before
