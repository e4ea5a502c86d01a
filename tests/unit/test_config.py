"""Settings are validated at start-up and every variable is documented."""

from __future__ import annotations

import pytest

from auditsvc.audit.models import Strategy
from auditsvc.config import VARIABLES, ConfigError, Settings
from tests.support import REPO


class TestFromEnv:
    """from_env reads a Mapping, applies defaults and names bad variables."""

    def test_defaults_are_conservative(self):
        """With no variables set, removal and backfill are off and timings are the originals."""
        s = Settings.from_env({})
        assert not s.enable_duplicate_removal and not s.enable_auto_backfill
        assert s.duplicate_resolution_strategy is Strategy.KEEP_NEWEST
        assert (s.heartbeat_interval, s.election_timeout, s.audit_interval) == (10, 30, 300)
        assert s.grpc_host == "127.0.0.1" and s.grpc_port == 50051 and s.metrics_port == 9464
        assert s.advertise_address == "127.0.0.1:50051"
        assert s.renew_deadline == 20

    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"GRPC_PORT": "x"}, "GRPC_PORT"),
            ({"GRPC_PORT": "70000"}, "GRPC_PORT"),
            ({"ENABLE_AUDITOR": "maybe"}, "ENABLE_AUDITOR"),
            ({"DUPLICATE_RESOLUTION_STRATEGY": "keep_all"}, "DUPLICATE_RESOLUTION_STRATEGY"),
            ({"AUDIT_TIMEFRAMES": "1m,1y"}, "AUDIT_TIMEFRAMES"),
            ({"AUDIT_SYMBOLS": " , "}, "AUDIT_SYMBOLS"),
            ({"CANDLE_COLLECTION_TEMPLATE": "c_{sym}"}, "CANDLE_COLLECTION_TEMPLATE"),
            ({"LEADER_ELECTION_TIMEOUT": "20"}, "LEADER_ELECTION_TIMEOUT"),
            ({"AUDIT_INTERVAL": "nan"}, "AUDIT_INTERVAL"),
            ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
            ({"GRPC_TLS_CERT_FILE": "/nonexistent.pem"}, "GRPC_TLS_CERT_FILE"),
        ],
    )
    def test_bad_value_names_the_variable(self, env, variable):
        """Each bad value raises ConfigError for exactly that variable."""
        with pytest.raises(ConfigError) as err:
            Settings.from_env(env)
        assert err.value.variable == variable
        assert variable in str(err.value)

    def test_timeframes_are_case_sensitive(self):
        """1M is a month and 1m a minute; both are accepted and kept apart."""
        s = Settings.from_env({"AUDIT_TIMEFRAMES": "1m,1M"})
        assert s.audit_timeframes == ("1m", "1M")

    def test_token_is_not_in_repr(self):
        """The API token never shows up in the settings' repr."""
        s = Settings.from_env({"AUDIT_API_TOKEN": "s3cr3t-token"})
        assert s.api_token == "s3cr3t-token"
        assert "s3cr3t-token" not in repr(s)


class TestDocumentation:
    """The README table lists every variable the service reads."""

    def test_every_variable_is_in_the_readme(self):
        """Each name in VARIABLES appears in README.md's configuration table."""
        readme = (REPO / "README.md").read_text()
        missing = [v.name for v in VARIABLES if f"| `{v.name}` |" not in readme]
        assert missing == []
