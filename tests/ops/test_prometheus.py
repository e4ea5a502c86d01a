"""A real Prometheus server scrapes a running replica and loads the alert rules."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditsvc.ops.settings import Settings
from tests.support import SecantusDB, eventually, free_port, replica_env, wait_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "k8s" / "monitoring" / "alerts.yaml"
TIMEOUT = 10.0
SCRAPE_DEADLINE = 60.0

pytestmark = pytest.mark.slow


def binary(name: str) -> str:
    """The path of a Prometheus tool, failing (never skipping) when it is not installed."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH: `make setup` installs it (Debian package prometheus)")
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


class Prometheus:
    """``prometheus`` on a free loopback port, scraping one target every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.log = tmp / "prometheus.log"
        self.config = tmp / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": "auditsvc",
                            "scrape_interval": "1s",
                            "scrape_timeout": "1s",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.args = [
            binary("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 30, self.proc)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    async def api(self, path: str, **query: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        body = await asyncio.wait_for(asyncio.to_thread(get_json, url), timeout=TIMEOUT)
        assert body["status"] == "success", body
        return body["data"]

    async def ready(self) -> bool:
        """True once /-/ready answers 200 (it answers 503 while the TSDB opens)."""
        url = f"http://127.0.0.1:{self.port}/-/ready"
        try:
            await asyncio.wait_for(asyncio.to_thread(get_text, url), timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            return False
        return True

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def metrics_target(
    mongo: SecantusDB, db_name: str, start_replica: Callable[..., Any]
) -> Callable[[], Any]:
    async def start() -> Settings:
        env = replica_env(mongo.uri, db_name, METRICS_PORT=str(free_port()))
        settings = Settings.from_env(env)
        await start_replica(settings)
        return settings

    return start


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    made: list[Prometheus] = []

    def make(target: str) -> Prometheus:
        server = Prometheus(tmp_path, target)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
async def scraped(
    metrics_target: Callable[[], Any], prometheus_factory: Callable[[str], Prometheus]
) -> AsyncIterator[tuple[Settings, Prometheus]]:
    settings = await metrics_target()
    target = f"127.0.0.1:{settings.ops.metrics_port}"
    server = await asyncio.to_thread(prometheus_factory, target)
    await eventually(server.ready, within=SCRAPE_DEADLINE, interval=0.2)
    yield settings, server
    code = await asyncio.to_thread(server.stop)
    assert code == 0, f"prometheus exited {code}\n{server.tail()}"


class TestPrometheusScrape:
    """Prometheus scrapes the replica and sees it as leader; the rules evaluate cleanly."""

    async def test_leader_status_scraped(self, scraped: tuple[Settings, Prometheus]) -> None:
        """The query data_manager_audit_leader_status returns 1 within the deadline."""
        _, server = scraped

        async def leader_seen() -> bool:
            data = await server.api("query", query="data_manager_audit_leader_status")
            return any(r["value"][1] == "1" for r in data["result"])

        try:
            await eventually(leader_seen, within=SCRAPE_DEADLINE, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"prometheus never saw leader_status 1\n{server.tail()}") from exc

    async def test_rules_load_and_evaluate(self, scraped: tuple[Settings, Prometheus]) -> None:
        """Every alert rule from alerts.yaml is loaded and evaluates without error on live data."""
        _, server = scraped
        expected = {
            r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
        }

        async def rules_evaluated() -> bool:
            data = await server.api("rules", type="alert")
            rules = [r for g in data["groups"] for r in g["rules"]]
            assert {r["name"] for r in rules} == expected
            broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
            assert not broken, broken
            return all(r["health"] == "ok" for r in rules)

        await eventually(rules_evaluated, within=SCRAPE_DEADLINE, interval=0.5)

        async def target_up() -> bool:
            data = await server.api("query", query='up{job="auditsvc"}')
            return [r["value"][1] for r in data["result"]] == ["1"]

        await eventually(target_up, within=SCRAPE_DEADLINE, interval=0.5)
        firing = await server.api("query", query='ALERTS{alertname="DataManagerNoLeader"}')
        assert firing["result"] == []

    async def test_promtool_accepts_exposition(self, metrics_target: Callable[[], Any]) -> None:
        """`promtool check metrics` finds no lint problem in the live /metrics text."""
        settings = await metrics_target()
        url = f"http://127.0.0.1:{settings.ops.metrics_port}/metrics"
        text = await asyncio.wait_for(asyncio.to_thread(get_text, url), timeout=TIMEOUT)
        result = await asyncio.to_thread(
            subprocess.run,
            [binary("promtool"), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
