"""The public API of auditclient is pinned."""

from __future__ import annotations

import tomllib
from pathlib import Path

import auditclient

CLIENTS = Path(__file__).resolve().parents[2] / "clients"


class TestExportedMembers:
    """``__all__`` is the exact supported surface."""

    def test_all_is_pinned(self) -> None:
        """__all__ lists exactly these names (update deliberately, with the README)."""
        assert sorted(auditclient.__all__) == [
            "AuditClient",
            "AuditError",
            "BlockingAuditClient",
            "ClientOptions",
            "DeadlineExceeded",
            "FailedPrecondition",
            "InvalidArgument",
            "NoLeader",
            "NotFound",
            "ResourceExhausted",
            "StreamEvent",
            "Unauthenticated",
            "Unavailable",
            "__version__",
            "from_rpc_error",
            "verdict_age",
        ]

    def test_every_name_resolves(self) -> None:
        """Each exported name exists on the package."""
        for name in auditclient.__all__:
            assert getattr(auditclient, name) is not None

    def test_exceptions_share_one_base(self) -> None:
        """Every exported exception derives from AuditError."""
        errors = [
            getattr(auditclient, n) for n in auditclient.__all__ if n[0].isupper() and "Error" in n
        ]
        errors += [auditclient.NoLeader, auditclient.Unavailable, auditclient.NotFound]
        assert all(issubclass(e, auditclient.AuditError) for e in errors)
        assert issubclass(auditclient.NoLeader, auditclient.Unavailable)

    def test_version_matches_the_distribution(self) -> None:
        """__version__ equals the version in clients/pyproject.toml."""
        project = tomllib.loads((CLIENTS / "pyproject.toml").read_text())["project"]
        assert auditclient.__version__ == project["version"] == "0.1.0"

    def test_typed_markers_ship(self) -> None:
        """Both packages carry py.typed."""
        assert (CLIENTS / "auditclient" / "py.typed").is_file()
        assert (CLIENTS / "auditpb" / "py.typed").is_file()
