"""docs/AUDITOR.md stays in step with the alerts, the settings and its own links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from auditsvc.ops.settings import VARIABLES
from tests.support import REPO

DOCS = REPO / "docs"
AUDITOR = DOCS / "AUDITOR.md"
ALERTS = REPO / "k8s" / "monitoring" / "alerts.yaml"
PHASES = range(1, 6)
# Each rollout phase must show the command that switches it on.
PHASE_COMMANDS = {
    1: ("kubectl apply -k k8s/", "set env deployment/auditsvc ENABLE_AUDITOR=false"),
    2: ("set env deployment/auditsvc ENABLE_AUDITOR-",),
    3: ("scale deployment/auditsvc --replicas=3", "delete pod"),
    4: ("ENABLE_AUTO_BACKFILL=true", "MIN_AUTO_BACKFILL_GAP=3600"),
    5: ("ENABLE_DUPLICATE_REMOVAL=true", "keep_newest", "restore-duplicates --request-id"),
}
FAULTS = (
    "SIGKILL",
    "SIGTERM",
    "SIGSTOP",
    "partition",
    "down at start",
    "mid-cycle",
    "restart",
    "configuration",
    "disk",
    "clock skew",
)


def without_code(text: str) -> str:
    """The markdown with fenced code blocks removed (their `#` lines are not headings)."""
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.MULTILINE | re.DOTALL)


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside code blocks."""
    return [
        (len(m.group(1)), m.group(2).strip())
        for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*#*\s*$", without_code(text), re.MULTILINE)
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    plain = re.sub(r"\[(.*?)\]\(.*?\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor GitHub generates for the headings of ``text`` (with -1, -2 for repeats)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, heading in headings(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def section(text: str, title: str) -> str:
    """The body under the heading ``title`` up to the next heading of the same or higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#{1,6})\s+(.+?)\s*$", line)
        if m and m.group(2) == title:
            level = len(m.group(1))
            body: list[str] = []
            fenced = False
            for rest in lines[i + 1 :]:
                fenced ^= rest.startswith("```")
                n = re.match(r"^(#{1,6})\s", rest)
                if n and not fenced and len(n.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body)
    raise AssertionError(f"no heading {title!r}")


@pytest.fixture(scope="module")
def guide() -> str:
    return AUDITOR.read_text()


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


class TestAlertRunbooks:
    """Each alert's runbook_url lands on its own troubleshooting entry."""

    def test_every_alert_has_a_runbook_url_into_the_guide(self, alerts):
        """Every alert's runbook_url is docs/AUDITOR.md#<lowercased alert name>."""
        assert alerts
        for rule in alerts:
            url = rule["annotations"]["runbook_url"]
            assert url == f"docs/AUDITOR.md#{str(rule['alert']).lower()}", rule["alert"]

    def test_every_runbook_anchor_is_an_alert_heading(self, alerts, guide):
        """Each anchor matches a `### <AlertName>` heading, spelled exactly as the alert."""
        level3 = {text for level, text in headings(guide) if level == 3}
        for rule in alerts:
            name = str(rule["alert"])
            assert name in level3, f"no '### {name}' heading"
            anchor = str(rule["annotations"]["runbook_url"]).split("#", 1)[1]
            assert slug(name) == anchor
            assert anchor in anchors(guide)

    def test_every_runbook_says_what_it_means_and_what_to_do(self, alerts, guide):
        """Each entry explains the meaning, how to confirm and what to do."""
        for rule in alerts:
            body = section(guide, str(rule["alert"]))
            for part in ("**Means:**", "**Confirm:**", "**Act:**"):
                assert part in body, f"{rule['alert']}: no {part}"


class TestConfigurationTable:
    """The guide documents every setting with its default."""

    @pytest.mark.parametrize("variable", VARIABLES, ids=lambda v: v.name)
    def test_variable_has_a_row_with_its_default(self, guide, variable):
        """The configuration table has a row for the variable showing its default."""
        rows = [line for line in guide.splitlines() if line.startswith(f"| `{variable.name}` |")]
        assert len(rows) == 1, f"{variable.name}: {len(rows)} rows"
        default = rows[0].split("|")[2].strip()
        if variable.default:
            assert default == f"`{variable.default}`"
        else:
            assert default.startswith("(empty")


class TestSections:
    """The guide has the sections an operator looks for."""

    def test_has_failure_modes_covering_each_fault(self, guide):
        """A "Failure modes" section tabulates every listed fault."""
        assert (2, "Failure modes") in headings(guide)
        body = section(guide, "Failure modes")
        rows = [line for line in body.splitlines() if line.startswith("| **")]
        for fault in FAULTS:
            assert any(fault.lower() in row.split("|")[1].lower() for row in rows), fault

    @pytest.mark.parametrize("phase", PHASES)
    def test_has_each_rollout_phase_with_its_rollback(self, guide, phase):
        """Phase N has its own heading, its switch-on command and a rollback heading."""
        titles = [text for _, text in headings(guide)]
        (title,) = [t for t in titles if t.startswith(f"Phase {phase}:")]
        assert f"Rollback of phase {phase}" in titles
        body = section(guide, title)
        for command in PHASE_COMMANDS[phase]:
            assert command in body, f"phase {phase}: {command!r}"

    def test_rollout_uses_the_namespace_and_setup_db(self, guide):
        """Rollout commands name the market-data namespace and run setup-db."""
        body = section(guide, "Rollout")
        assert "auditsvc setup-db" in body
        assert "kind: Job" in body
        assert "port-forward" in body
        kubectl = re.findall(r"^\s*kubectl .*$", body, re.MULTILINE)
        assert kubectl
        for line in kubectl:
            if "apply -k" not in line and "delete -k" not in line and "debug node" not in line:
                assert "-n market-data" in line or "namespace market-data" in line, line

    def test_has_tls_auth_and_logs_sections(self, guide):
        """TLS and authentication, and the log format, are documented."""
        titles = [text for _, text in headings(guide)]
        assert "TLS and authentication" in titles and "Logs" in titles
        for word in ("AUDIT_READS_REQUIRE_TOKEN", "plaintext", "replica_id", "cycle_id"):
            assert word in guide


class TestLinks:
    """Links between the docs point at files and headings that exist."""

    @pytest.mark.parametrize("name", ["AUDITOR.md", "GRPCURL.md"])
    def test_relative_links_resolve(self, name):
        """Every relative link's file exists and its anchor is a heading there."""
        text = (DOCS / name).read_text()
        targets = re.findall(r"\]\(([^)\s]+)\)", without_code(text))
        assert targets
        for target in targets:
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (DOCS / path).resolve() if path else DOCS / name
            assert file.exists(), target
            if anchor:
                assert anchor in anchors(Path(file).read_text()), target

    def test_guide_links_the_cookbook(self, guide):
        """The operator's guide links the grpcurl cookbook."""
        assert "](GRPCURL.md)" in guide
