"""docs/GRPCURL.md: every ```sh block runs, in order, against a real replica."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditpb.v1 import audit_pb2 as pb
from auditsvc.devtools.demo import demo_series
from auditsvc.ops.settings import Settings
from auditsvc.storage.mongo.database import connect
from tests.support import BIN, REPO, SecantusDB, eventually, process_env, replica_env

DOC = REPO / "docs" / "GRPCURL.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"
START_TIMEOUT = 60.0
DOC_TARGET = "127.0.0.1:50051"
PAGE_PLACEHOLDER = "NEXT_PAGE_TOKEN"
# DeleteAcknowledgement's example deletes the one AcknowledgeGaps' example made.
ACK_PLACEHOLDER = "ACK_ID"
TOKEN = "cookbook-token-0123456789"
# What shlex makes of the prefix that lets the token commands run with AUDIT_TOKEN unset.
TOKEN_PREFIX = "AUDIT_TOKEN=${AUDIT_TOKEN-}"
COMMAND_TIMEOUT = 30.0
SEED_TIMEOUT = 60.0
# A 6 h default window (360 one-minute slots; 1h windows stay at AUDIT_MIN_CANDLES=30)
# keeps the seeded data small; the demo series still has its two gaps and three duplicates.
LOOKBACK_SLOTS = 360
TEST_ENV = {"AUDIT_LOOKBACK": str(LOOKBACK_SLOTS * 60)}
# grpcurl exits with 64 + the gRPC status code; -max-time ends a stream with DEADLINE_EXCEEDED.
DEADLINE_EXIT = 64 + 4
# The range example in the cookbook: the day before 2026-01-01T00:00:00Z.
RANGE_END_MS = 1_767_225_600_000
SERVICE = pb.DESCRIPTOR.services_by_name["AuditService"]
HEALTH_METHODS = ("grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch")
MUTATING = ("RunAudit", "ResolveDuplicates", "AcknowledgeGaps", "DeleteAcknowledgement")
# What the reply of each method must contain, beyond a zero (or deadline) exit.
EXPECTED_OUTPUT = {
    "GetLeader": '"leader_id": "cookbook-1"',
    "RunAudit": "CYCLE_STATUS_SUCCEEDED",
    "ResolveDuplicates": '"duplicate_groups": 3',
    "AcknowledgeGaps": '"reason": "Binance maintenance',
    "ListAcknowledgements": '"reason": "Binance maintenance',
    "DeleteAcknowledgement": '"reason": "Binance maintenance',
    "StreamHealthScores": '"quality"',
    "Health/Check": '"status": "SERVING"',
    "Health/Watch": '"status": "SERVING"',
}


def sh_blocks(text: str) -> list[str]:
    """The body of every ```sh fenced block, backslash-continued lines joined."""
    bodies = re.findall(r"^```sh\n(.*?)^```\s*$", text, flags=re.MULTILINE | re.DOTALL)
    return [body.replace("\\\n", " ").strip() for body in bodies]


def commands() -> list[str]:
    """The cookbook's commands in document order."""
    return sh_blocks(DOC.read_text())


def words(block: str) -> list[str]:
    """The command's words, without the leading `AUDIT_TOKEN="${AUDIT_TOKEN-}"` assignment."""
    args = shlex.split(block)
    return args[1:] if args and args[0] == TOKEN_PREFIX else args


def method_of(args: list[str]) -> str:
    """The `service/method` argument of a grpcurl command, or '' for list/describe."""
    for arg in args:
        if re.fullmatch(r"[\w.]+/\w+", arg):
            return arg
    return ""


def short(method: str) -> str:
    """`auditpb.v1.AuditService/RunAudit` -> `RunAudit`; health keeps `Health/...`."""
    if method.startswith("grpc.health.v1."):
        return method.removeprefix("grpc.health.v1.")
    return method.rsplit("/", 1)[-1]


async def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Runs one command with a deadline; kills it if the deadline passes."""
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def shell_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without AUDIT_TOKEN, plus ``extra``, with the venv's grpcurl first
    on PATH: the commands run as typed into a shell after `make run`."""
    env = {k: v for k, v in os.environ.items() if k != "AUDIT_TOKEN"}
    env["PATH"] = f"{GRPCURL.parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


async def seed(settings: Settings, *, series: tuple[tuple[str, str], ...] = ()) -> None:
    """Demo data like `make run` (1m: LOOKBACK_SLOTS, 1h: 30 slots, ending now), plus
    BTCUSDT 1m on the day the range example audits; ``series`` limits what is seeded."""
    now_ms = int(time.time() * 1000)
    wanted = series or tuple(
        (s, tf) for s in settings.audit.symbols for tf in settings.audit.timeframes
    )
    database = connect(settings.mongo.uri, settings.mongo.database, 2000)
    try:
        async with asyncio.timeout(SEED_TIMEOUT):
            for i, symbol in enumerate(settings.audit.symbols):
                for timeframe in settings.audit.timeframes:
                    if (symbol, timeframe) not in wanted:
                        continue
                    slots = LOOKBACK_SLOTS if timeframe == "1m" else 30
                    docs, _ = demo_series(symbol, timeframe, now_ms, slots, 100.0 * (i + 1))
                    await database.db[settings.audit.collection_for(symbol, timeframe)].insert_many(
                        docs
                    )
            if not series:
                docs, _ = demo_series("BTCUSDT", "1m", RANGE_END_MS, LOOKBACK_SLOTS)
                await database.db[settings.audit.collection_for("BTCUSDT", "1m")].insert_many(docs)
    finally:
        await database.close()


def _report_gaps_listed(reply: dict[str, Any]) -> bool:
    """The range ListGaps lists what the range report found that day: the unseeded
    hours before the seed and the seed's two gaps, and nothing else."""
    starts = [gap["start_time"] for gap in reply.get("gaps", [])]
    return len(starts) == 3 and all(s.startswith("2025-12-31") for s in starts)


class TestCookbookShape:
    """The cookbook is a list of single grpcurl commands covering the whole API."""

    def test_every_block_is_one_grpcurl_command(self):
        """Each ```sh block holds exactly one grpcurl command aimed at the documented target."""
        blocks = commands()
        assert len(blocks) >= 10
        for block in blocks:
            assert "\n" not in block, f"more than one line in block: {block!r}"
            args = words(block)
            assert args[0] == "grpcurl", block
            assert "-plaintext" in args, block
            assert DOC_TARGET in args, block

    def test_covers_every_audit_service_method(self):
        """Every method of auditpb.v1.AuditService in the proto has at least one command."""
        called = {method_of(words(c)) for c in commands()}
        for method in SERVICE.methods:
            assert f"{SERVICE.full_name}/{method.name}" in called, method.name

    def test_covers_both_health_methods(self):
        """Health Check is shown for liveness and readiness, and Watch is shown too."""
        blocks = [words(c) for c in commands()]
        called = {method_of(args) for args in blocks}
        for method in HEALTH_METHODS:
            assert method in called, method
        checked = {
            json.loads(args[args.index("-d") + 1]).get("service", "")
            for args in blocks
            if method_of(args) == "grpc.health.v1.Health/Check"
        }
        assert checked == {"", SERVICE.full_name}

    def test_covers_list_and_describe(self):
        """Reflection is shown with `list` and `describe`."""
        verbs = set()
        for block in commands():
            args = words(block)
            verbs.add(args[args.index(DOC_TARGET) + 1])
        assert {"list", "describe"} <= verbs

    def test_streams_are_bounded(self):
        """Every streaming command carries -max-time so that it ends on its own."""
        streaming = {f"{SERVICE.full_name}/StreamHealthScores", "grpc.health.v1.Health/Watch"}
        for block in commands():
            args = words(block)
            if method_of(args) in streaming:
                assert "-max-time" in args, block

    def test_mutating_calls_send_the_token(self):
        """RunAudit and ResolveDuplicates send the bearer token header from AUDIT_TOKEN,
        expanded by grpcurl (not on the command line) and defined even when unset."""
        for block in commands():
            args = words(block)
            if short(method_of(args)) in MUTATING:
                assert block.startswith('AUDIT_TOKEN="${AUDIT_TOKEN-}" grpcurl '), block
                assert "-expand-headers" in args, block
                assert args[args.index("-H") + 1] == "authorization: Bearer ${AUDIT_TOKEN}"

    def test_shows_runaudit_with_and_without_a_range(self):
        """RunAudit appears with the default window and with an explicit range."""
        bodies = [
            json.loads(args[args.index("-d") + 1])
            for args in map(words, commands())
            if short(method_of(args)) == "RunAudit"
        ]
        assert any("start_time" not in b for b in bodies)
        assert any("start_time" in b and "end_time" in b for b in bodies)

    def test_shows_dry_run_and_apply(self):
        """ResolveDuplicates appears as a dry run and as an apply with a request_id."""
        bodies = [
            json.loads(args[args.index("-d") + 1])
            for args in map(words, commands())
            if short(method_of(args)) == "ResolveDuplicates"
        ]
        assert any(b.get("dry_run") is True for b in bodies)
        assert any(b.get("dry_run") is False and b.get("request_id") for b in bodies)


class TestCookbookRuns:
    """Run with bash against a real leader with demo data, every command succeeds."""

    @pytest.mark.parametrize(
        ("server_token", "client_env"),
        [
            pytest.param(None, {}, id="make-run-no-token"),
            pytest.param(TOKEN, {"AUDIT_TOKEN": TOKEN}, id="server-token"),
        ],
    )
    async def test_every_command_succeeds_in_document_order(
        self,
        make_settings: Callable[..., Settings],
        start_replica: Callable[..., Any],
        server_token: str | None,
        client_env: dict[str, str],
    ):
        """Each command exits 0 (streams: the -max-time deadline) with the expected reply,
        as after `make run` (no token anywhere) and with a token on both sides."""
        token = {"AUDIT_API_TOKEN": server_token} if server_token else {}
        settings = make_settings(
            **TEST_ENV,
            REPLICA_ID="cookbook-1",
            ENABLE_LEADER_ELECTION="true",
            LEADER_ELECTION_HEARTBEAT_INTERVAL="2",
            LEADER_ELECTION_TIMEOUT="6",
            ENABLE_DUPLICATE_REMOVAL="true",
            **token,
        )
        await seed(settings)
        async with asyncio.timeout(START_TIMEOUT):
            replica = await start_replica(settings)

        async def leading() -> bool:
            return replica.app.leadership.term() is not None

        await eventually(leading, within=30)
        env = shell_env(client_env)
        page_token = ack_id = ""
        failures: list[str] = []
        for block in commands():
            line = block.replace(DOC_TARGET, replica.target)
            if PAGE_PLACEHOLDER in line:
                assert page_token, "\n".join(
                    [f"no earlier reply had a next_page_token for: {block}", *failures]
                )
                line = line.replace(PAGE_PLACEHOLDER, page_token)
            if ACK_PLACEHOLDER in line:
                assert ack_id, "no earlier AcknowledgeGaps reply gave an id"
                line = line.replace(ACK_PLACEHOLDER, ack_id)
            code, out, err = await run(["bash", "-c", line], env)
            args = words(block)
            method = short(method_of(args))
            streaming = "-max-time" in args
            if streaming:
                # Streams never end on their own: -max-time cuts them with DEADLINE_EXCEEDED.
                if code != DEADLINE_EXIT or "DeadlineExceeded" not in err:
                    failures.append(f"exit {code}, not the -max-time deadline: {block}\n{err}")
                    continue
            elif code != 0:
                failures.append(f"exit {code}: {block}\n{err}")
                continue
            expected = EXPECTED_OUTPUT.get(method)
            if expected is not None and expected not in out:
                failures.append(f"no {expected!r} in the reply of: {block}\n{out}")
            if method == "RunAudit" and '"end_time"' in block and '"historical": true' not in out:
                failures.append(f"the historical range is not a report: {block}\n{out}")
            if method == "AcknowledgeGaps":
                ack_id = json.loads(out)["acknowledgement"]["id"]
            if method == "ListGaps":
                reply = json.loads(out)
                page_token = reply.get("next_page_token", page_token)
                if '"end_time"' in block and not _report_gaps_listed(reply):
                    failures.append(f"the report's gaps are not listed: {block}\n{out}")
        assert not failures, "\n\n".join(failures)

    async def test_apply_removes_and_restore_puts_back(
        self,
        make_settings: Callable[..., Settings],
        start_replica: Callable[..., Any],
        mongo: SecantusDB,
        db_name: str,
    ):
        """The documented apply archives and removes three duplicates; restore puts them back."""
        settings = make_settings(**TEST_ENV, ENABLE_DUPLICATE_REMOVAL="true")
        await seed(settings, series=(("BTCUSDT", "1m"),))
        async with asyncio.timeout(START_TIMEOUT):
            replica = await start_replica(settings)
        (apply,) = [
            c
            for c in commands()
            if short(method_of(words(c))) == "ResolveDuplicates" and '"dry_run":false' in c
        ]
        apply = apply.replace(DOC_TARGET, replica.target)
        code, out, err = await run(["bash", "-c", apply], shell_env({}))
        assert code == 0, err
        reply = json.loads(out)
        assert reply["documents_removed"] == "3"
        assert reply["documents_archived"] == "3"
        assert reply["request_id"] == "cookbook-dedupe-btc-1m"
        restore = [str(BIN / "auditsvc"), "restore-duplicates", "--request-id", reply["request_id"]]
        code, out, err = await run(restore, process_env(replica_env(mongo.uri, db_name)))
        assert code == 0, err
        assert out.strip() == "restored 3 documents; 0 were already present"
