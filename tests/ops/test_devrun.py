"""`python -m auditsvc dev` as a real process tree (runner, SecantusDB, a replica):
a busy port is named before anything starts, the banner waits for readiness, and
whatever signal ends the runner, no child outlives it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditpb.v1 import audit_pb2 as pb
from auditpb.v1 import audit_pb2_grpc as pb_grpc
from auditsvc.transport.server import SERVICE_NAME
from tests.support import free_port, process_env

pytestmark = pytest.mark.slow

START_TIMEOUT = 120.0
EXIT_TIMEOUT = 40.0
BANNER = "auditsvc is up"


class DevRunner:
    """One `auditsvc dev` on free ports; ``close`` kills whatever is left of its tree."""

    def __init__(self, tmp_path: Path) -> None:
        self.db_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.data_dir = tmp_path / "devdata"
        self.stdout = tmp_path / "dev.stdout"
        self.stderr = tmp_path / "dev.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: list[psutil.Process] = []

    def start(self, **env: str) -> None:
        args = [
            sys.executable,
            "-m",
            "auditsvc",
            "dev",
            "--data-dir",
            str(self.data_dir),
            "--db-port",
            str(self.db_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
        ]
        merged = process_env({"AUDIT_STARTUP_DELAY": "0", "LOG_LEVEL": "WARNING", **env})
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(args, env=merged, stdout=out, stderr=err)

    def wait_banner(self) -> None:
        """Polls stdout for the banner; fails if the runner exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while BANNER not in self.stdout.read_text():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def wait_exit(self) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=EXIT_TIMEOUT)

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def close(self) -> None:
        for child in self.children:
            if alive(child):
                child.kill()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie may wait for a PID 1 that never reaps)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_all_gone(children: list[psutil.Process]) -> list[psutil.Process]:
    """Polls until no child is alive or the deadline passes; returns those still alive."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    while time.monotonic() < deadline:
        left = [c for c in children if alive(c)]
        if not left:
            return []
        time.sleep(0.1)
    return [c for c in children if alive(c)]


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[DevRunner]:
    dev = DevRunner(tmp_path)
    try:
        yield dev
    finally:
        dev.close()


def readiness(port: int) -> int:
    """The readiness health status of the replica on ``port``, right now."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        return int(reply.status)


class TestDevShutdown:
    """SIGTERM, SIGHUP or SIGKILL to the runner leaves no SecantusDB or replica running."""

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
    def test_signal_stops_every_child(self, runner: DevRunner, sig: signal.Signals) -> None:
        """The banner comes once the replica is ready; after the signal every child is gone."""
        runner.start()
        runner.wait_banner()
        assert readiness(runner.grpc_port) == health_pb2.HealthCheckResponse.SERVING
        names = " ".join(" ".join(c.cmdline()) for c in runner.children)
        assert "secantusd" in names and "auditsvc serve" in names, names
        assert runner.proc is not None
        runner.proc.send_signal(sig)
        code = runner.wait_exit()
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), runner.output()
        left = wait_all_gone(runner.children)
        assert not left, [" ".join(c.cmdline()) for c in left]


class TestDevPorts:
    """A port in use stops `dev` before it starts anything, naming the port and its holder."""

    @pytest.mark.parametrize("which", ["db", "grpc", "metrics"])
    def test_busy_port_exits_2_and_starts_nothing(self, runner: DevRunner, which: str) -> None:
        """Exit 2, one line naming the port, its variable and this test as the holder."""
        port = getattr(runner, f"{which}_port")
        variable = {"db": "--db-port", "grpc": "GRPC_PORT", "metrics": "METRICS_PORT"}[which]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            runner.start()
            code = runner.wait_exit()
        err = runner.stderr.read_text()
        assert code == 2, runner.output()
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"{variable}: 127.0.0.1:{port} is already in use by pid {os.getpid()} " in err
        assert not (runner.data_dir / "secantusd.log").exists()


def state_of(port: int, symbol: str) -> int | None:
    """The stored series state of ``symbol`` on the replica at ``port``, right now."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AuditServiceStub(channel)
        reply = stub.ListHealthScores(pb.ListHealthScoresRequest(symbols=[symbol]), timeout=5)
        return reply.scores[0].state if reply.scores else None


def wait_state(port: int, symbol: str, state: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while state_of(port, symbol) != state:
        assert time.monotonic() < deadline, f"{symbol} never reached {pb.SeriesState.Name(state)}"
        time.sleep(0.2)


def feed_control(data_dir: Path, flag: str, symbol: str) -> str:
    """Runs `auditsvc dev --pause-feed/--resume-feed SYMBOL`, as the README says."""
    result = subprocess.run(
        [sys.executable, "-m", "auditsvc", "dev", "--data-dir", str(data_dir), flag, symbol],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env({}),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class TestDevDemoFeed:
    """`make run` keeps its demo series LIVE, and a paused symbol turns LATE."""

    def test_pause_one_symbol_turns_late_and_resume_live(self, runner: DevRunner) -> None:
        """Fed series are LIVE; --pause-feed BTCUSDT makes it LATE (ETH stays LIVE); resume."""
        runner.start(AUDIT_TIMEFRAMES="1s", AUDIT_INGEST_GRACE="1", LIVE_POLL_INTERVAL="0.2")
        runner.wait_banner()
        assert "--pause-feed BTCUSDT" in runner.stdout.read_text()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            wait_state(runner.grpc_port, symbol, pb.SERIES_STATE_LIVE)

        out = feed_control(runner.data_dir, "--pause-feed", "BTCUSDT")
        assert "paused" in out and "BTCUSDT" in out
        wait_state(runner.grpc_port, "BTCUSDT", pb.SERIES_STATE_LATE)
        assert state_of(runner.grpc_port, "ETHUSDT") == pb.SERIES_STATE_LIVE

        feed_control(runner.data_dir, "--resume-feed", "BTCUSDT")
        wait_state(runner.grpc_port, "BTCUSDT", pb.SERIES_STATE_LIVE)
        assert runner.proc is not None
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.wait_exit() == 0, runner.output()
        assert not wait_all_gone(runner.children)
