"""`make run` / `make cluster`: a local SecantusDB under .devdata/, demo data,
and one or three replicas on 127.0.0.1. Ctrl-C stops everything.

This is a developer convenience; production runs `auditsvc serve` against a
real MongoDB.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from auditsvc.config import Settings
from auditsvc.dbtools import seed_demo

DEV_DB_PORT = 27027


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Polls until something listens on 127.0.0.1:``port``; TimeoutError after
    ``timeout`` seconds, RuntimeError as soon as ``proc`` (if given) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before opening {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout:g}s")


def _wait_port(port: int, deadline_s: float) -> None:
    try:
        wait_port(port, deadline_s)
    except TimeoutError:
        raise SystemExit(f"127.0.0.1:{port} did not open in {deadline_s:g}s") from None


def _start_db(data_dir: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "secantusd-py"
    (data_dir / "db").mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "secantusd.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(DEV_DB_PORT),
            "--storage-path",
            str(data_dir / "db"),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait_port(DEV_DB_PORT, 30)
    return proc


def _env(replica: int, replicas: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MONGODB_URI", f"mongodb://127.0.0.1:{DEV_DB_PORT}")
    env.setdefault("MONGODB_DATABASE", "market_data")
    env.setdefault("AUDIT_INTERVAL", "60")
    env.setdefault("AUDIT_STARTUP_DELAY", "2")
    env["GRPC_PORT"] = str(50051 + replica)
    env["METRICS_PORT"] = str(9464 + replica)
    env["REPLICA_ID"] = f"dev-{replica + 1}"
    if replicas == 1:
        env.setdefault("ENABLE_LEADER_ELECTION", "false")
    else:
        env["ENABLE_LEADER_ELECTION"] = "true"
        env.setdefault("LEADER_ELECTION_HEARTBEAT_INTERVAL", "1")
        env.setdefault("LEADER_ELECTION_TIMEOUT", "3")
    return env


def _banner(replicas: int) -> None:
    print("\nauditsvc is up. Try:\n")
    print("  .venv/bin/grpcurl -plaintext 127.0.0.1:50051 list")
    print(
        "  .venv/bin/grpcurl -plaintext -d '{}' 127.0.0.1:50051 auditpb.v1.AuditService/GetStatus"
    )
    print(
        '  .venv/bin/grpcurl -plaintext -d \'{"symbols":["BTCUSDT"],"timeframes":["1m"]}\' '
        "127.0.0.1:50051 auditpb.v1.AuditService/RunAudit"
    )
    if replicas > 1:
        print(
            "\nWatch the leader:  watch -n1 \".venv/bin/grpcurl -plaintext -d '{}' "
            '127.0.0.1:50052 auditpb.v1.AuditService/GetLeader"'
        )
        print("Kill it to see failover:  kill -9 <pid of the leader, printed above>;")
        print("the others keep running, and a new leader takes over within a few seconds.")
    print("\nMetrics: http://127.0.0.1:9464/metrics   Ctrl-C stops everything.\n", flush=True)


def run_dev(*, replicas: int, data_dir: str) -> int:
    root = Path(data_dir).resolve()
    db = _start_db(root)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings.from_env(_env(0, replicas))
        asyncio.run(seed_demo(settings, force=False))
        for i in range(replicas):
            proc = subprocess.Popen(
                [sys.executable, "-m", "auditsvc", "serve"], env=_env(i, replicas)
            )
            print(
                f"replica dev-{i + 1}: pid {proc.pid}, grpc 127.0.0.1:{50051 + i}, "
                f"metrics 127.0.0.1:{9464 + i}"
            )
            procs.append(proc)
        for i in range(replicas):
            _wait_port(50051 + i, 30)
        _banner(replicas)
        # With several replicas, one dying is the failover demo, not the end.
        reported: set[int] = set()
        while any(p.poll() is None for p in procs) and (replicas > 1 or procs[0].poll() is None):
            for i, p in enumerate(procs):
                if p.poll() is not None and i not in reported:
                    reported.add(i)
                    print(f"replica dev-{i + 1} exited with {p.returncode}", flush=True)
            time.sleep(0.5)
        return next((p.returncode for p in procs if p.returncode), 0)
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in [*procs, db]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*procs, db]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
