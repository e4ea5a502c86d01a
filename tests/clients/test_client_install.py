"""The client distribution installs into a fresh venv without the server's stack."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[2] / "clients"


@pytest.mark.slow
@pytest.mark.timeout(400)
class TestFreshInstall:
    """``pip install ./clients`` pulls only grpcio, protobuf and googleapis-common-protos."""

    def test_installs_and_imports_without_server_deps(self, tmp_path: Path) -> None:
        """auditclient, the stubs and auditctl work; pymongo (the server's driver) is absent."""
        source = tmp_path / "clients"
        shutil.copytree(
            CLIENTS,
            source,
            ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"),
        )
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", str(source)],
            check=True,
            timeout=300,
        )
        subprocess.run(
            [
                str(python),
                "-c",
                "import auditclient, auditpb.v1.audit_pb2, auditpb.v1.audit_pb2_grpc",
            ],
            check=True,
            timeout=60,
        )
        help_text = subprocess.run(
            [str(venv / "bin" / "auditctl"), "--help"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "resolve-duplicates" in help_text
        driver = subprocess.run(
            [str(python), "-c", "import pymongo"], capture_output=True, text=True, timeout=60
        )
        assert driver.returncode != 0
        assert "ModuleNotFoundError" in driver.stderr
