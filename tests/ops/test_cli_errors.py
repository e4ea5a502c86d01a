"""`auditsvc` as a real process meets a busy port or a down database: one line on
stderr naming the cause, a documented exit code, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from auditsvc.cli import EXIT_CODES, EXIT_CONFIG, EXIT_DATABASE
from tests.support import free_port, process_env, replica_env

TIMEOUT = 60.0


async def auditsvc(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Runs ``python -m auditsvc ARGS`` with a deadline; kills it if the deadline passes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditsvc",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def listener() -> Iterator[int]:
    """A port this test process listens on, so that nothing else can bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def down_database_env(**overrides: str) -> dict[str, str]:
    """Settings pointing at a port where no database listens, with a short timeout."""
    uri = f"mongodb://127.0.0.1:{free_port()}"
    return process_env(replica_env(uri, "down", MONGODB_TIMEOUT_MS="500", **overrides))


def assert_one_line(err: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith("auditsvc: "), err
    assert "Traceback" not in err, err


class TestBusyPort:
    """`serve` with GRPC_PORT or METRICS_PORT taken exits 2 with one line naming both."""

    @pytest.mark.parametrize("variable", ["GRPC_PORT", "METRICS_PORT"])
    async def test_busy_port_exits_2_naming_variable_and_holder(
        self, listener: int, variable: str
    ) -> None:
        """The line names the variable, the address and this test's pid as the holder."""
        env = down_database_env(**{variable: str(listener)})
        code, _, err = await auditsvc("serve", env=env)
        assert code == EXIT_CONFIG, err
        assert_one_line(err)
        assert f"{variable}: 127.0.0.1:{listener} is already in use" in err
        assert f"by pid {os.getpid()} " in err


class TestTemplateWithoutTimeframe:
    """A template every timeframe would share is refused before anything starts."""

    async def test_template_without_timeframe_exits_2(self) -> None:
        """Two timeframes and a template without {timeframe}: one line naming it, exit 2."""
        env = down_database_env(
            AUDIT_TIMEFRAMES="1m,1h", CANDLE_COLLECTION_TEMPLATE="klines_{symbol}"
        )
        code, _, err = await auditsvc("serve", env=env)
        assert code == EXIT_CONFIG, err
        assert_one_line(err)
        assert "CANDLE_COLLECTION_TEMPLATE" in err and "{timeframe}" in err


class TestDatabaseDown:
    """Every one-shot command answers a down database with one line and exit 3."""

    @pytest.mark.parametrize(
        "args",
        [
            ["restore-duplicates", "--request-id", "r-1"],
            ["setup-db"],
            ["seed-demo"],
        ],
    )
    async def test_down_database_exits_3(self, args: list[str]) -> None:
        """No traceback: `auditsvc: database unreachable: ...` and exit 3."""
        code, out, err = await auditsvc(*args, env=down_database_env())
        assert code == EXIT_DATABASE, err
        assert_one_line(err)
        assert err.startswith("auditsvc: database unreachable: "), err
        assert out == "" or "Traceback" not in out


class TestHelp:
    """`auditsvc --help` documents every exit code."""

    async def test_help_lists_exit_codes(self) -> None:
        """Each code of EXIT_CODES appears with its meaning."""
        code, out, _ = await auditsvc("--help", env=process_env({}))
        assert code == 0
        assert "exit codes:" in out
        for number, meaning in EXIT_CODES:
            assert f"  {number}  {meaning}" in out
