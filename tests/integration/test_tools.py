"""The real grpcurl binary, the CLI's exit codes, and the generated code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.support import BIN, REPO, process_env, replica_env

TIMEOUT = 30.0


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class TestGrpcurl:
    """grpcurl discovers and calls the service through reflection."""

    async def test_list_status_and_health(self, make_settings, start_replica):
        """`list`, GetStatus and Health/Check work against a running replica."""
        replica = await start_replica(make_settings())
        grpcurl = str(BIN / "grpcurl")
        code, out, err = await _run(grpcurl, "-plaintext", replica.target, "list")
        assert code == 0, err
        assert "auditpb.v1.AuditService" in out.split()
        code, out, err = await _run(
            grpcurl, "-plaintext", "-d", "{}", replica.target, "auditpb.v1.AuditService/GetStatus"
        )
        assert code == 0, err
        assert json.loads(out)["role"] == "ROLE_STANDALONE"
        code, out, err = await _run(
            grpcurl,
            "-plaintext",
            "-d",
            '{"service":"auditpb.v1.AuditService"}',
            replica.target,
            "grpc.health.v1.Health/Check",
        )
        assert code == 0, err
        assert json.loads(out)["status"] == "SERVING"


class TestCli:
    """The CLI refuses bad settings with exit code 2 and names the variable."""

    async def test_bad_setting_exits_2(self, mongo, db_name):
        """A timeout not above twice the heartbeat is refused at start-up."""
        env = process_env(
            replica_env(
                mongo.uri,
                db_name,
                LEADER_ELECTION_TIMEOUT="15",
                LEADER_ELECTION_HEARTBEAT_INTERVAL="10",
            )
        )
        code, _, err = await _run(sys.executable, "-m", "auditsvc", "serve", env=env)
        assert code == 2
        assert "LEADER_ELECTION_TIMEOUT" in err and "Traceback" not in err

    async def test_unknown_timeframe_setting_lists_accepted_values(self, mongo, db_name):
        """A bad AUDIT_TIMEFRAMES names the variable and the accepted values."""
        env = process_env(replica_env(mongo.uri, db_name, AUDIT_TIMEFRAMES="1m,2m"))
        code, _, err = await _run(sys.executable, "-m", "auditsvc", "serve", env=env)
        assert code == 2
        assert "AUDIT_TIMEFRAMES" in err and "1M" in err

    async def test_help_lists_every_subcommand(self):
        """`auditsvc --help` names every subcommand."""
        code, out, _ = await _run(str(BIN / "auditsvc"), "--help")
        assert code == 0
        for command in ("serve", "setup-db", "restore-duplicates", "seed-demo", "dev"):
            assert command in out

    async def test_setup_db_is_idempotent(self, mongo, db_name):
        """setup-db runs twice cleanly and verifies the lease round trip."""
        env = process_env(replica_env(mongo.uri, db_name))
        for _ in range(2):
            code, out, err = await _run(
                sys.executable, "-m", "auditsvc", "setup-db", "--candle-indexes", env=env
            )
            assert code == 0, err
            assert "lease round trip ok" in out
            assert "backfill_requests.one_open_per_gap" in out


class TestGeneratedCode:
    """The committed stubs are exactly what `make proto` produces."""

    def test_stubs_are_up_to_date(self, tmp_path: Path):
        """Regenerating from the proto gives byte-identical files."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{REPO / 'protos'}",
                f"--python_out={tmp_path}",
                f"--pyi_out={tmp_path}",
                f"--grpc_python_out={tmp_path}",
                str(REPO / "protos/auditpb/v1/audit.proto"),
            ],
            check=True,
            timeout=60,
        )
        for name in ("audit_pb2.py", "audit_pb2.pyi", "audit_pb2_grpc.py"):
            fresh = (tmp_path / "auditpb/v1" / name).read_text()
            assert fresh == (REPO / "clients/auditpb/v1" / name).read_text(), name


class TestBufBreaking:
    """`buf breaking` against the released image catches an incompatible change."""

    def test_renamed_field_fails_the_check(self, tmp_path: Path):
        """Renaming a contract field in a copy of the proto makes buf breaking exit non-zero."""
        import shutil

        buf = REPO / "node_modules/.bin/buf"
        work = tmp_path / "repo"
        shutil.copytree(REPO / "protos", work / "protos")
        shutil.copy(REPO / "buf.yaml", work / "buf.yaml")
        image = str(REPO / "protos/released/auditpb-v1.binpb")
        same = subprocess.run(
            [str(buf), "breaking", "--against", image], cwd=work, capture_output=True, timeout=120
        )
        assert same.returncode == 0, same.stderr
        proto = work / "protos/auditpb/v1/audit.proto"
        proto.write_text(proto.read_text().replace("string leader_id = 1;", "string leader = 1;"))
        changed = subprocess.run(
            [str(buf), "breaking", "--against", image], cwd=work, capture_output=True, timeout=120
        )
        assert changed.returncode != 0
        assert b"leader_id" in changed.stdout + changed.stderr
