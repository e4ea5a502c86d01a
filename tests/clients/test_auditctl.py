"""auditctl against the fake server, as a subprocess, plus in-process argument errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pty
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from auditclient.cli import build_parser, main
from auditpb.v1 import audit_pb2

from .fakes import FakeAuditService, FakeServer, gap, live, score, ts

SUBCOMMANDS = (
    "status",
    "leader",
    "gaps",
    "anomalies",
    "run",
    "resolve-duplicates",
    "scores",
    "watch",
    "ack",
    "acks",
)


async def auditctl(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m auditclient.cli ARGS``; return (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUDITSVC_")}
    environ.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditclient.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            async with asyncio.timeout(10):
                await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class TestCommands:
    """Each subcommand prints a table or JSON and exits 0."""

    async def test_status_table_and_json(self, server: FakeServer) -> None:
        """status prints a table, and protobuf JSON with proto field names under --json."""
        code, out, err = await auditctl("--target", server.target, "status")
        assert (code, err) == (0, "")
        assert "replica-a" in out and "leader" in out and "cycle-1" in out
        code, out, _ = await auditctl("status", "--target", server.target, "--json")
        assert code == 0
        data = json.loads(out)
        assert data["role"] == "ROLE_LEADER"
        assert data["last_cycle"]["series"][0]["symbol"] == "BTCUSDT"

    async def test_leader(self, server: FakeServer) -> None:
        """leader prints the lease holder."""
        code, out, _ = await auditctl("leader", "--target", server.target)
        assert code == 0
        assert "10.0.0.1:50051" in out

    async def test_gaps_follows_all_pages(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """gaps prints every gap of every page and passes the filters on."""
        service.gap_pages = [[gap("BTCUSDT", 0), gap("BTCUSDT", 3)], [gap("BTCUSDT", 6)], []]
        code, out, _ = await auditctl(
            "gaps",
            "--target",
            server.target,
            "--symbol",
            "BTCUSDT",
            "--timeframe",
            "1m",
            "--start",
            "2024-01-01T00:00:00Z",
            "--min-missing",
            "2",
        )
        assert code == 0
        assert out.count("BTCUSDT") == 3
        assert "3 gap(s)" in out
        assert "2024-01-01T00:06:00Z" in out
        first = service.requests["ListGaps"][0]
        assert (first.symbol, first.timeframe, first.min_missing_candles) == ("BTCUSDT", "1m", 2)
        assert first.start_time.seconds == 1_704_067_200
        code, out, _ = await auditctl("gaps", "--json", "--target", server.target)
        assert code == 0
        assert len(json.loads(out)["gaps"]) == 3

    async def test_anomalies_follows_pages_and_filters(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """anomalies prints every finding of every page and passes the filters on."""
        spike = audit_pb2.Anomaly(
            symbol="BTCUSDT",
            timeframe="1m",
            open_time=ts(1_704_067_200),
            rule=audit_pb2.ANOMALY_RULE_PRICE_SPIKE,
            detail="high 99000.0 departs 230.0% from the previous close",
            field="high",
            observed=99000.0,
            expected=30000.0,
        )
        frozen = audit_pb2.Anomaly(
            symbol="BTCUSDT",
            timeframe="1m",
            open_time=ts(1_704_067_260),
            rule=audit_pb2.ANOMALY_RULE_FROZEN_FEED,
            detail="part of a run",
            detected_live=True,
        )
        service.anomaly_pages = [[spike], [frozen]]
        code, out, err = await auditctl(
            "anomalies",
            "--target",
            server.target,
            "--symbol",
            "BTCUSDT",
            "--timeframe",
            "1m",
            "--rule",
            "price_spike",
            "--rule",
            "frozen_feed",
            "--start",
            "2024-01-01T00:00:00Z",
        )
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split()[:5] == ["SYMBOL", "TF", "OPEN_TIME", "RULE", "FIELD"]
        assert lines[1].split()[:8] == [
            "BTCUSDT",
            "1m",
            "2024-01-01T00:00:00Z",
            "price_spike",
            "high",
            "99000",
            "30000",
            "no",
        ]
        assert lines[2].split()[3:8] == ["frozen_feed", "-", "-", "-", "yes"]
        assert lines[-1] == "2 anomaly(ies)"
        first = service.requests["ListAnomalies"][0]
        assert (first.symbol, first.timeframe) == ("BTCUSDT", "1m")
        assert list(first.rules) == [
            audit_pb2.ANOMALY_RULE_PRICE_SPIKE,
            audit_pb2.ANOMALY_RULE_FROZEN_FEED,
        ]
        assert first.start_time.seconds == 1_704_067_200
        code, out, _ = await auditctl("anomalies", "--json", "--target", server.target)
        assert code == 0
        data = json.loads(out)["anomalies"]
        assert [d["rule"] for d in data] == ["ANOMALY_RULE_PRICE_SPIKE", "ANOMALY_RULE_FROZEN_FEED"]
        assert "observed" not in data[1]  # unset, not 0

    def test_anomalies_rejects_unknown_rule(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown --rule is a usage error (exit 2) before any call."""
        assert main(["anomalies", "--rule", "nonsense", "--target", "h:1"]) == 2
        assert "nonsense" in capsys.readouterr().err

    async def test_gaps_states(self, server: FakeServer, service: FakeAuditService) -> None:
        """gaps --state passes the states on; --state all asks for every state."""
        code, _, err = await auditctl("gaps", "--target", server.target, "--state", "filled")
        assert code == 0, err
        assert list(service.requests["ListGaps"][-1].states) == [audit_pb2.GAP_STATE_FILLED]
        code, _, err = await auditctl("gaps", "--target", server.target, "--state", "all")
        assert code == 0, err
        assert len(service.requests["ListGaps"][-1].states) == 5
        code, _, err = await auditctl("gaps", "--target", server.target)
        assert code == 0 and list(service.requests["ListGaps"][-1].states) == []

    async def test_ack_acks_and_delete(self, server: FakeServer, service: FakeAuditService) -> None:
        """ack sends the window, reason and request_id; acks lists; ack --delete deletes."""
        code, out, err = await auditctl(
            "ack",
            "--target",
            server.target,
            "--symbol",
            "BTCUSDT",
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2030-01-01T00:00:00Z",
            "--reason",
            "exchange maintenance",
            "--request-id",
            "ack-req-1",
        )
        assert code == 0, err
        assert "ack-1" in out and "exchange maintenance" in out
        sent = service.requests["AcknowledgeGaps"][0]
        assert (list(sent.symbols), sent.reason, sent.request_id) == (
            ["BTCUSDT"],
            "exchange maintenance",
            "ack-req-1",
        )
        assert sent.end_time.seconds == 1_893_456_000  # the future is allowed
        code, out, _ = await auditctl("acks", "--target", server.target, "--json")
        assert code == 0
        assert [a["id"] for a in json.loads(out)["acknowledgements"]] == ["ack-1"]
        code, out, _ = await auditctl("ack", "--target", server.target, "--delete", "ack-1")
        assert code == 0 and "ack-1" in out
        assert service.requests["DeleteAcknowledgement"][0].id == "ack-1"

    async def test_ack_needs_window_and_reason(self, server: FakeServer) -> None:
        """ack without --reason is a usage error before any call."""
        code, _, err = await auditctl(
            "ack", "--target", server.target, "--start", "2026-01-01", "--end", "2026-01-02"
        )
        assert code == 2 and "--reason" in err

    async def test_run_repeatable_filters(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """run sends repeated --symbol/--timeframe and the UTC window."""
        code, out, _ = await auditctl(
            "run",
            "--target",
            server.target,
            "--symbol",
            "BTCUSDT",
            "--symbol",
            "ETHUSDT",
            "--timeframe",
            "1m",
            "--start",
            "2024-01-01T02:00:00+02:00",
            "--end",
            "2024-01-02",
            "--request-id",
            "cli-1",
        )
        assert code == 0
        assert "cycle-1" in out and "96.50" in out
        sent = service.requests["RunAudit"][0]
        assert list(sent.symbols) == ["BTCUSDT", "ETHUSDT"]
        assert (sent.start_time.seconds, sent.end_time.seconds) == (1_704_067_200, 1_704_153_600)
        assert sent.request_id == "cli-1"

    async def test_resolve_duplicates_dry_run_by_default(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """resolve-duplicates is a dry run unless --apply; --strategy is sent."""
        args = ("resolve-duplicates", "--target", server.target, "--symbol", "BTCUSDT")
        code, out, _ = await auditctl(*args, "--timeframe", "1m")
        assert code == 0 and "dry_run" in out
        assert "groups_skipped" in out and "skipped (first" not in out
        code, out, _ = await auditctl(*args, "--timeframe", "1m", "--apply")
        # A group that changed since it was read is left alone, and said so.
        assert code == 0 and "skipped (first 1): 2024-01-01T01:00:00Z" in out
        code, out, _ = await auditctl(
            *args, "--timeframe", "1m", "--strategy", "keep_oldest", "--apply", "--json"
        )
        assert code == 0
        assert json.loads(out)["documents_removed"] == "1"
        first, _, second = service.requests["ResolveDuplicates"]
        assert (first.dry_run, second.dry_run) == (True, False)
        assert second.strategy == audit_pb2.STRATEGY_KEEP_OLDEST

    async def test_scores_table_json_and_state_filter(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """scores prints each series' state; --state late asks the server for LATE only."""
        service.health_scores = [
            live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LIVE),
            live("ETHUSDT", "1s", audit_pb2.SERIES_STATE_LATE, late=4),
            live("SOLUSDT", "1s", audit_pb2.SERIES_STATE_NO_DATA),
        ]
        code, out, err = await auditctl("scores", "--target", server.target)
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split()[:5] == ["SYMBOL", "TF", "STATE", "LAST_CANDLE", "LATE"]
        assert lines[1].split()[:5] == ["BTCUSDT", "1s", "live", "2023-12-31T23:59:00Z", "0"]
        assert lines[2].split()[:5] == ["ETHUSDT", "1s", "late", "2023-12-31T23:59:00Z", "4"]
        assert lines[3].split()[:5] == ["SOLUSDT", "1s", "no_data", "-", "0"]
        assert lines[-1] == "3 series"

        code, out, _ = await auditctl("scores", "--target", server.target, "--state", "late")
        assert code == 0
        assert service.requests["ListHealthScores"][-1].state == audit_pb2.SERIES_STATE_LATE
        assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["ETHUSDT"]

        code, out, _ = await auditctl("scores", "--target", server.target, "--json")
        assert code == 0
        data = json.loads(out)["scores"]
        assert [(d["symbol"], d["state"]) for d in data] == [
            ("BTCUSDT", "SERIES_STATE_LIVE"),
            ("ETHUSDT", "SERIES_STATE_LATE"),
            ("SOLUSDT", "SERIES_STATE_NO_DATA"),
        ]
        assert data[1]["late_candles"] == "4"  # uint64: a string in canonical JSON

    async def test_scores_show_suspect_and_validity(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """scores has SUSPECT and VALIDITY columns."""
        suspect = live("BTCUSDT", "1m", audit_pb2.SERIES_STATE_LIVE)
        suspect.suspect, suspect.validity, suspect.anomaly_count = True, 99.5, 2
        clean = live("ETHUSDT", "1m", audit_pb2.SERIES_STATE_LIVE)
        clean.validity = 100.0
        service.health_scores = [suspect, clean]
        code, out, err = await auditctl("scores", "--target", server.target)
        assert (code, err) == (0, "")
        header, first, second = out.splitlines()[:3]
        at = header.split().index("SUSPECT")
        assert header.split()[at + 1] == "VALIDITY"
        assert first.split()[at : at + 2] == ["yes", "99.50"]
        assert second.split()[at : at + 2] == ["no", "100.00"]

    async def test_scores_show_verdict_age_and_unknown(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """The VERDICT column says how long ago each state was confirmed, or never;
        --state unknown asks the server for UNKNOWN."""
        confirmed = datetime.now(UTC) - timedelta(seconds=3)
        service.health_scores = [
            live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LIVE, verdict=confirmed),
            live("ETHUSDT", "1s", audit_pb2.SERIES_STATE_UNKNOWN),
        ]
        code, out, err = await auditctl("scores", "--target", server.target)
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split()[5] == "VERDICT"
        btc = lines[1].split()
        assert btc[2] == "live" and btc[6] == "ago" and 3.0 <= float(btc[5].rstrip("s")) < 60
        assert lines[2].split()[2:6] == ["unknown", "2023-12-31T23:59:00Z", "0", "never"]

        code, out, _ = await auditctl("scores", "--target", server.target, "--state", "unknown")
        assert code == 0
        assert service.requests["ListHealthScores"][-1].state == audit_pb2.SERIES_STATE_UNKNOWN
        assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["ETHUSDT"]

    def test_scores_rejects_unknown_state(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--state accepts live, late, no_data or unknown only: exit 2 before any
        connection."""
        assert main(["scores", "--state", "stale"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--state" in err

    async def test_env_target_and_token(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """AUDITSVC_TARGET and AUDITSVC_TOKEN are used; the token is never printed."""
        env = {"AUDITSVC_TARGET": server.target, "AUDITSVC_TOKEN": "s3cret"}
        code, out, err = await auditctl("leader", env=env)
        assert code == 0
        assert service.metadata[0]["authorization"] == "Bearer s3cret"
        assert "s3cret" not in out + err


class TestExitCodes:
    """Server errors map to exit codes 2/3/4/1 with a one-line message."""

    @pytest.mark.parametrize(
        ("status", "details", "expected"),
        [
            (grpc.StatusCode.INVALID_ARGUMENT, "unknown timeframe 7m", 2),
            (grpc.StatusCode.NOT_FOUND, "no such series", 2),
            (grpc.StatusCode.FAILED_PRECONDITION, "auditor disabled", 2),
            (grpc.StatusCode.UNAVAILABLE, "no leader is known", 3),
            (grpc.StatusCode.UNAUTHENTICATED, "bad token", 4),
            (grpc.StatusCode.INTERNAL, "boom", 1),
        ],
    )
    async def test_server_errors(
        self,
        server: FakeServer,
        service: FakeAuditService,
        status: grpc.StatusCode,
        details: str,
        expected: int,
    ) -> None:
        """The exit code follows the error class; stderr is one line without traceback."""
        service.always["RunAudit"] = (status, details, ())
        code, out, err = await auditctl("run", "--target", server.target)
        assert code == expected
        assert out == ""
        assert err.count("\n") == 1 and details in err and "Traceback" not in err

    async def test_unreachable_server_exits_3(self) -> None:
        """A closed port exits 3 within the deadline."""
        code, _, err = await auditctl("--target", "127.0.0.1:1", "--timeout", "1", "status")
        assert code == 3
        assert err.startswith("auditctl: error:") and err.count("\n") == 1

    @pytest.mark.parametrize(
        "argv",
        [
            ["gaps", "--start", "yesterday"],
            ["gaps", "--min-missing", "-1"],
            ["resolve-duplicates", "--symbol", "BTCUSDT"],
            ["resolve-duplicates", "--symbol", "A", "--timeframe", "1m", "--strategy", "x"],
            ["--timeout", "0", "status"],
            ["status", "--ca-file", "/nonexistent/ca.pem"],
            ["status", "--cert-file", "c.pem"],
            ["frobnicate"],
            [],
        ],
    )
    def test_bad_arguments_exit_2(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Argument errors exit 2 with one line on stderr, before any connection."""
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("auditctl")

    def test_help_exits_0(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help prints usage and exits 0."""
        assert main(["--help"]) == 0
        assert "resolve-duplicates" in capsys.readouterr().out

    @pytest.mark.parametrize("command", SUBCOMMANDS)
    async def test_subcommand_help_exits_0(self, command: str) -> None:
        """`auditctl COMMAND --help` prints usage with the connection flags and exits 0."""
        code, out, err = await auditctl(command, "--help", env={"AUDITSVC_TARGET": "h:1"})
        assert (code, err) == (0, "")
        assert out.startswith(f"usage: auditctl {command}")
        assert "--target" in out and "default h:1" in " ".join(out.split())

    def test_every_subcommand_is_covered(self) -> None:
        """The --help test above lists every subcommand the parser has."""
        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        assert set(sub.choices) == set(SUBCOMMANDS)


@contextlib.asynccontextmanager
async def watching(server: FakeServer, *args: str, **kwargs: Any) -> AsyncIterator[Process]:
    """Run ``auditctl watch``; kill it on the way out if it is still running."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUDITSVC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditclient.cli",
        "watch",
        "--target",
        server.target,
        *args,
        env=environ,
        **kwargs,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            async with asyncio.timeout(10):
                await process.wait()


class TestWatch:
    """watch prints updates until Ctrl-C and then exits 0."""

    async def test_lines_when_not_a_tty(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """Without a tty, each update is one line; SIGINT exits 0."""
        service.stream_batches = [[score("BTCUSDT", "1m", 100, 91.0), score("ETH", "5m", 100)]]
        pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
        async with watching(server, **pipes) as process, asyncio.timeout(30):
            assert process.stdout is not None
            lines = [await process.stdout.readline() for _ in range(2)]
            process.send_signal(signal.SIGINT)
            _, err = await process.communicate()
        assert process.returncode == 0, err
        assert b"BTCUSDT 1m state=- " in lines[0] and b"quality=91.00" in lines[0]
        assert b"ETH 5m" in lines[1]
        assert b"Traceback" not in err

    async def test_lines_show_state_changes(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """A series turning LATE then LIVE prints its state, and what it was before."""
        service.stream_batches = [
            [
                live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LIVE, at=1),
                live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LATE, late=1, at=2),
                live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LATE, late=2, at=3),
                live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LIVE, at=4),
            ]
        ]
        pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
        async with watching(server, **pipes) as process, asyncio.timeout(30):
            assert process.stdout is not None
            lines = [(await process.stdout.readline()).decode() for _ in range(4)]
            process.send_signal(signal.SIGINT)
            await process.communicate()
        assert process.returncode == 0
        assert " state=live last_candle=2023-12-31T23:59:00Z late=0 " in lines[0]
        assert " state=late (was live) " in lines[1] and " late=1 " in lines[1]
        assert " state=late last_candle" in lines[2] and " late=2 " in lines[2]
        assert " state=live (was late) " in lines[3]

    async def test_json_lines(self, server: FakeServer, service: FakeAuditService) -> None:
        """With --json each update is one JSON object per line."""
        service.stream_batches = [[score("BTCUSDT", "1m", 100)]]
        pipes = {"stdout": asyncio.subprocess.PIPE}
        async with watching(server, "--json", **pipes) as process, asyncio.timeout(30):
            assert process.stdout is not None
            line = await process.stdout.readline()
            process.send_signal(signal.SIGINT)
            await process.wait()
        assert json.loads(line)["symbol"] == "BTCUSDT"
        assert process.returncode == 0

    async def test_redraws_in_place_on_a_tty(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """On a tty the table is cleared and redrawn with ANSI codes."""
        service.stream_batches = [[score("BTCUSDT", "1m", 100, 88.0)]]
        controller, terminal = pty.openpty()
        loop = asyncio.get_running_loop()
        screen = b""
        try:
            async with watching(server, stdout=terminal) as process, asyncio.timeout(30):
                os.close(terminal)
                while b"88.00" not in screen:
                    chunk = await loop.run_in_executor(None, os.read, controller, 4096)
                    assert chunk, screen
                    screen += chunk
                process.send_signal(signal.SIGINT)
                await process.wait()
        finally:
            os.close(controller)
        assert process.returncode == 0
        assert b"\x1b[2J" in screen and b"QUALITY" in screen and b"STATE" in screen


async def read_until(stream: asyncio.StreamReader, text: bytes) -> bytes:
    """Read lines until one contains ``text``; return it (the caller bounds the wait)."""
    while True:
        line = await stream.readline()
        assert line, f"stream ended before {text!r}"
        if text in line:
            return line


class TestWatchOutages:
    """watch says when its stream drops and when it is back, on a terminal or not."""

    async def test_lines_when_not_a_tty(
        self, server: FakeServer, service: FakeAuditService
    ) -> None:
        """A stopped server prints one disconnected line, its return one reconnected line,
        between the score lines on stdout."""
        confirmed = datetime.now(UTC)
        service.stream_batches = [
            [live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LIVE, verdict=confirmed)]
        ]
        pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
        async with watching(server, **pipes) as process, asyncio.timeout(60):
            assert process.stdout is not None
            first = await process.stdout.readline()
            assert b" state=live " in first and b" verdict_age=" in first
            await server.stop()
            down = await process.stdout.readline()
            await server.start()
            back = await process.stdout.readline()
            process.send_signal(signal.SIGINT)
            rest, err = await process.communicate()
        assert process.returncode == 0, err
        assert b" stream disconnected (" in down and down.endswith(b"; reconnecting\n")
        assert b" stream reconnected after " in back
        assert b"stream" not in rest  # one line each: failed reconnects are the same outage

    async def test_stderr_with_json(self, server: FakeServer, service: FakeAuditService) -> None:
        """With --json the outage lines go to stderr; stdout stays one score per line."""
        service.stream_batches = [[score("BTCUSDT", "1m", 100)]]
        pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
        async with watching(server, "--json", **pipes) as process, asyncio.timeout(60):
            assert process.stdout is not None and process.stderr is not None
            assert json.loads(await process.stdout.readline())["symbol"] == "BTCUSDT"
            await server.stop()
            down = await read_until(process.stderr, b"stream disconnected")
            await server.start()
            back = await read_until(process.stderr, b"stream reconnected")
            process.send_signal(signal.SIGINT)
            rest, _ = await process.communicate()
        assert process.returncode == 0
        assert down.count(b"\n") == back.count(b"\n") == 1
        assert all(json.loads(line)["symbol"] == "BTCUSDT" for line in rest.splitlines())

    async def test_header_on_a_tty(self, server: FakeServer, service: FakeAuditService) -> None:
        """On a terminal the header says the stream is down, then back; ages are redrawn."""
        confirmed = datetime.now(UTC)
        service.stream_batches = [
            [live("BTCUSDT", "1s", audit_pb2.SERIES_STATE_LIVE, verdict=confirmed)]
        ]
        controller, terminal = pty.openpty()
        loop = asyncio.get_running_loop()
        screen = b""

        async def until_shown(text: bytes, times: int = 1) -> None:
            nonlocal screen
            while screen.count(text) < times:
                chunk = await loop.run_in_executor(None, os.read, controller, 4096)
                assert chunk, screen
                screen += chunk

        try:
            async with watching(server, stdout=terminal) as process, asyncio.timeout(60):
                os.close(terminal)
                await until_shown(b"VERDICT")
                await until_shown(b" ago")
                # No score arrives any more, yet the ticker redraws the ages.
                await until_shown(b"\x1b[2J", screen.count(b"\x1b[2J") + 2)
                await server.stop()
                await until_shown(b"stream disconnected (")
                await server.start()
                await until_shown(b"stream reconnected after ")
                process.send_signal(signal.SIGINT)
                await process.wait()
        finally:
            os.close(controller)
        assert process.returncode == 0
