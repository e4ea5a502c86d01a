"""`make run` / `make cluster`: a local SecantusDB under .devdata/, demo data,
a demo feed writing each series' candle as its slot closes (auditsvc.devtools.demofeed),
and one or three replicas on 127.0.0.1.

Guarantees: every port is checked before anything starts, and a busy one is
named with the process that holds it (exit 2). The banner prints only once
every replica answers a readiness health check. Ctrl-C, SIGTERM and SIGHUP
(an IDE's stop button, a closed terminal) stop the children and wait for
them. On Linux the children also get SIGTERM from the kernel when the runner
dies of anything else, SIGKILL included (PR_SET_PDEATHSIG), so no SecantusDB
or replica is left holding the ports and the data directory. Elsewhere only
the trapped signals are covered.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditsvc.devtools import die_with_parent
from auditsvc.devtools.dbtools import seed_demo
from auditsvc.devtools.demobackfill import DemoBackfiller
from auditsvc.devtools.demofeed import PAUSE_FILE, DemoFeed
from auditsvc.ops.ports import ensure_free
from auditsvc.ops.settings import Settings

DEV_DB_PORT = 27027
DEV_GRPC_PORT = 50051
DEV_METRICS_PORT = 9464
_READY_TIMEOUT = 60.0


class _Stop(Exception):
    """A trapped SIGTERM or SIGHUP: leave through the cleanup path."""


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


@dataclass(frozen=True)
class DevPorts:
    """Where the dev database and replica ``i`` (0-based) listen: grpc + i, metrics + i."""

    db: int = DEV_DB_PORT
    grpc: int = DEV_GRPC_PORT
    metrics: int = DEV_METRICS_PORT

    def check(self, replicas: int) -> None:
        """Raises PortInUse for the first busy port, naming the variable and the holder."""
        ensure_free("--db-port", "127.0.0.1", self.db)
        for i in range(replicas):
            ensure_free("GRPC_PORT", "127.0.0.1", self.grpc + i)
            ensure_free("METRICS_PORT", "127.0.0.1", self.metrics + i)


def _spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # The children get SIGTERM when this process dies, whatever ends it.
    return subprocess.Popen(die_with_parent.command(args), **kwargs)


def _start_db(data_dir: Path, port: int, children: list[subprocess.Popen[bytes]]) -> None:
    binary = Path(sys.executable).parent / "secantusd-py"
    (data_dir / "db").mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "secantusd.log"
    with log_path.open("ab") as log:
        proc = _spawn(
            [
                str(binary),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(data_dir / "db"),
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    children.append(proc)
    print(f"SecantusDB: pid {proc.pid}, 127.0.0.1:{port}, log {log_path}", flush=True)
    try:
        wait_port(port, 30, proc)
    except (RuntimeError, TimeoutError) as exc:
        raise _Failed(f"SecantusDB did not start ({exc}); see {log_path}") from None


class _Failed(Exception):
    """A child did not come up; the message says which and where to look."""


def _env(replica: int, replicas: int, ports: DevPorts) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MONGODB_URI", f"mongodb://127.0.0.1:{ports.db}")
    env.setdefault("MONGODB_DATABASE", "market_data")
    env.setdefault("AUDIT_INTERVAL", "60")
    env.setdefault("AUDIT_STARTUP_DELAY", "2")
    # The demo writer (devtools/demobackfill.py) honours requests: gaps heal on screen.
    env.setdefault("ENABLE_AUTO_BACKFILL", "true")
    env.setdefault("MIN_AUTO_BACKFILL_GAP", "60")
    env["GRPC_PORT"] = str(ports.grpc + replica)
    env["METRICS_PORT"] = str(ports.metrics + replica)
    env["REPLICA_ID"] = f"dev-{replica + 1}"
    if replicas == 1:
        env.setdefault("ENABLE_LEADER_ELECTION", "false")
    else:
        env["ENABLE_LEADER_ELECTION"] = "true"
        env.setdefault("LEADER_ELECTION_HEARTBEAT_INTERVAL", "1")
        env.setdefault("LEADER_ELECTION_TIMEOUT", "3")
    return env


def _wait_ready(procs: list[subprocess.Popen[bytes]], ports: DevPorts) -> None:
    """Returns once every replica's readiness check (the AuditService) says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from auditsvc.transport.server import SERVICE_NAME

    deadline = time.monotonic() + _READY_TIMEOUT
    for i, proc in enumerate(procs):
        target = f"127.0.0.1:{ports.grpc + i}"
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if proc.poll() is not None:
                    raise _Failed(f"replica dev-{i + 1} exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise _Failed(
                        f"replica dev-{i + 1} ({target}) not ready in {_READY_TIMEOUT:g}s"
                    )
                try:
                    reply = stub.Check(
                        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass  # not listening yet
                time.sleep(0.1)


def _banner(replicas: int, ports: DevPorts) -> None:
    grpc0 = f"127.0.0.1:{ports.grpc}"
    print("\nauditsvc is up. Try:\n")
    print(f"  .venv/bin/grpcurl -plaintext {grpc0} list")
    print(f"  .venv/bin/grpcurl -plaintext -d '{{}}' {grpc0} auditpb.v1.AuditService/GetStatus")
    print(
        '  .venv/bin/grpcurl -plaintext -d \'{"symbols":["BTCUSDT"],"timeframes":["1m"]}\' '
        f"{grpc0} auditpb.v1.AuditService/RunAudit"
    )
    print(
        "\nThe demo feed writes each candle as its slot closes, so every series is LIVE:\n"
        f"  .venv/bin/auditctl --target {grpc0} watch\n"
        "Stop one symbol's feed (from another terminal) and watch it turn LATE once its\n"
        "next candle is AUDIT_INGEST_GRACE overdue; resume it to see LIVE and a live gap:\n"
        "  .venv/bin/python -m auditsvc dev --pause-feed BTCUSDT\n"
        "  .venv/bin/python -m auditsvc dev --resume-feed BTCUSDT"
    )
    if replicas > 1:
        print(
            "\nWatch the leader:  watch -n1 \".venv/bin/grpcurl -plaintext -d '{}' "
            f'127.0.0.1:{ports.grpc + 1} auditpb.v1.AuditService/GetLeader"'
        )
        print("Kill it to see failover:  kill -9 <pid of the leader, printed above>;")
        print("the others keep running, and a new leader takes over within a few seconds.")
    print(
        f"\nMetrics: http://127.0.0.1:{ports.metrics}/metrics   Ctrl-C stops everything.\n",
        flush=True,
    )


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_dev(*, replicas: int, data_dir: str, ports: DevPorts | None = None) -> int:
    """Runs the dev stack until Ctrl-C, SIGTERM or SIGHUP (exit 0) or, with one
    replica, until it exits (its code). A busy port raises PortInUse first."""
    ports = ports or DevPorts()
    ports.check(replicas)
    root = Path(data_dir).resolve()
    trapped = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in trapped}
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    db: list[subprocess.Popen[bytes]] = []
    procs: list[subprocess.Popen[bytes]] = []
    feed: DemoFeed | None = None
    backfiller: DemoBackfiller | None = None
    try:
        _start_db(root, ports.db, db)
        settings = Settings.from_env(_env(0, replicas, ports))
        asyncio.run(seed_demo(settings, force=False))
        # A pause left from an earlier run would make a series LATE for no visible reason.
        (root / PAUSE_FILE).unlink(missing_ok=True)
        feed = DemoFeed(settings.mongo, settings.audit, root)
        feed.start()
        backfiller = DemoBackfiller(settings.mongo, settings.audit)
        backfiller.start()
        for i in range(replicas):
            proc = _spawn([sys.executable, "-m", "auditsvc", "serve"], env=_env(i, replicas, ports))
            procs.append(proc)
            print(
                f"replica dev-{i + 1}: pid {proc.pid}, grpc 127.0.0.1:{ports.grpc + i}, "
                f"metrics 127.0.0.1:{ports.metrics + i}",
                flush=True,
            )
        _wait_ready(procs, ports)
        _banner(replicas, ports)
        return _watch(procs, replicas)
    except (KeyboardInterrupt, _Stop):
        return 0
    except _Failed as exc:
        print(f"auditsvc dev: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second signal (or Ctrl-C) during cleanup must not cut it short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if backfiller is not None:
            backfiller.stop()
        if feed is not None:
            feed.stop()
        _stop_all(procs)  # replicas first: they release the lease in the database
        _stop_all(db)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(procs: list[subprocess.Popen[bytes]], replicas: int) -> int:
    # With several replicas, one dying is the failover demo, not the end.
    reported: set[int] = set()
    while any(p.poll() is None for p in procs) and (replicas > 1 or procs[0].poll() is None):
        for i, p in enumerate(procs):
            if p.poll() is not None and i not in reported:
                reported.add(i)
                print(f"replica dev-{i + 1} exited with {p.returncode}", flush=True)
        time.sleep(0.5)
    return next((p.returncode for p in procs if p.returncode), 0)


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every child, then wait; SIGKILL what still runs after 15 s."""
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
