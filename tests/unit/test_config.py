"""Settings are validated at start-up and every variable is documented."""

from __future__ import annotations

import dataclasses

import pytest

from auditsvc.cli import build_parser
from auditsvc.domain.values import Strategy
from auditsvc.ops.settings import SECTIONS, VARIABLES, ConfigError, Settings, variables_table
from tests.support import REPO


class TestFromEnv:
    """from_env reads a Mapping, applies defaults and names bad variables."""

    def test_defaults_are_conservative(self):
        """With no variables set, removal and backfill are off and timings are the originals."""
        s = Settings.from_env({})
        assert not s.duplicates.removal_enabled and not s.backfill.enabled
        assert s.duplicates.strategy is Strategy.KEEP_NEWEST
        assert (s.election.heartbeat_interval, s.election.timeout, s.audit.interval) == (
            10,
            30,
            300,
        )
        assert (
            s.server.host == "127.0.0.1" and s.server.port == 50051 and s.ops.metrics_port == 9464
        )
        assert s.server.advertise_address == "127.0.0.1:50051"
        assert s.election.renew_deadline == 20

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
            ({"CANDLE_COLLECTION_TEMPLATE": "klines"}, "CANDLE_COLLECTION_TEMPLATE"),
            (
                {"AUDIT_TIMEFRAMES": "1m,1h", "CANDLE_COLLECTION_TEMPLATE": "c_{symbol}"},
                "CANDLE_COLLECTION_TEMPLATE",
            ),
            ({"LEADER_ELECTION_TIMEOUT": "20"}, "LEADER_ELECTION_TIMEOUT"),
            ({"AUDIT_INTERVAL": "nan"}, "AUDIT_INTERVAL"),
            ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
            ({"GRPC_TLS_CERT_FILE": "/nonexistent.pem"}, "GRPC_TLS_CERT_FILE"),
            ({"AUDIT_SYMBOLS_FILE": "/nonexistent.txt"}, "AUDIT_SYMBOLS_FILE"),
        ],
    )
    def test_bad_value_names_the_variable(self, env, variable):
        """Each bad value raises ConfigError for exactly that variable."""
        with pytest.raises(ConfigError) as err:
            Settings.from_env(env)
        assert err.value.variable == variable
        assert variable in str(err.value)

    def test_template_without_timeframe_serves_one_timeframe(self):
        """A template without {timeframe} is accepted when one timeframe is audited."""
        s = Settings.from_env({"AUDIT_TIMEFRAMES": "1h", "CANDLE_COLLECTION_TEMPLATE": "klines"})
        assert s.audit.collection_for("BTCUSDT", "1h") == "klines"

    def test_timeframes_are_case_sensitive(self):
        """1M is a month and 1m a minute; both are accepted and kept apart."""
        s = Settings.from_env({"AUDIT_TIMEFRAMES": "1m,1M"})
        assert s.audit.timeframes == ("1m", "1M")

    def test_symbols_file_replaces_the_list(self, tmp_path):
        """AUDIT_SYMBOLS_FILE takes commas or lines, blanks and repeats dropped, in order;
        30,000 symbols are more than one environment string may hold."""
        path = tmp_path / "symbols.txt"
        symbols = [f"S{i:05d}USDT" for i in range(30_000)]
        path.write_text("\n".join(symbols[:10]) + "\n\n" + ",".join(symbols[10:]) + ",S00000USDT\n")
        s = Settings.from_env({"AUDIT_SYMBOLS": "", "AUDIT_SYMBOLS_FILE": str(path)})
        assert s.audit.symbols == tuple(symbols)
        assert len(",".join(symbols)) > 128 * 1024

    @pytest.mark.parametrize(
        ("text", "extra", "message"),
        [
            ("BTCUSDT", {"AUDIT_SYMBOLS": "ETHUSDT"}, "not both"),
            ("\n , \n", {}, "at least one symbol"),
            ("BTCUSDT\nBTC USDT", {}, "'BTC USDT'"),
            (b"\xff\xfe", {}, "cannot read"),
        ],
    )
    def test_bad_symbols_file_names_the_file_variable(self, tmp_path, text, extra, message):
        """Both lists set, an empty file, a bad symbol or unreadable bytes name the file."""
        path = tmp_path / "symbols.txt"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        with pytest.raises(ConfigError) as err:
            Settings.from_env({"AUDIT_SYMBOLS_FILE": str(path), **extra})
        assert err.value.variable == "AUDIT_SYMBOLS_FILE"
        assert message in str(err.value)

    def test_token_is_not_in_repr(self):
        """The API token never shows up in the settings' repr."""
        s = Settings.from_env({"AUDIT_API_TOKEN": "s3cr3t-token"})
        assert s.security.api_token == "s3cr3t-token"
        assert "s3cr3t-token" not in repr(s)


class TestDocumentation:
    """The README table lists every variable the service reads."""

    def test_every_variable_is_in_the_readme(self):
        """Each name in VARIABLES appears in README.md's configuration table."""
        readme = (REPO / "README.md").read_text()
        missing = [v.name for v in VARIABLES if f"| `{v.name}` |" not in readme]
        assert missing == []

    def test_readme_table_is_the_generated_one(self):
        """README.md holds exactly the table generated from the settings' field metadata."""
        readme = (REPO / "README.md").read_text()
        assert variables_table() in readme

    def test_help_lists_every_variable(self):
        """`auditsvc --help` lists every variable with its default, from the same metadata."""
        text = build_parser().format_help()
        missing = [v.name for v in VARIABLES if v.name not in text]
        assert missing == []


class TestSections:
    """Each setting lives in one frozen section, and sections are what use cases receive."""

    def test_sections_are_frozen(self):
        """A section cannot be changed after start-up."""
        s = Settings.from_env({})
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.audit.interval = 1.0  # type: ignore[misc]

    def test_every_field_has_exactly_one_variable(self):
        """Every section field names one variable, and no variable is read twice."""
        names = [
            f.metadata["variable"].name for _, kind in SECTIONS for f in dataclasses.fields(kind)
        ]
        assert len(names) == len(set(names)) == len(VARIABLES)

    def test_derived_values(self):
        """advertise_address defaults to host:port; the token file fills the token."""
        s = Settings.from_env({"GRPC_HOST": "127.0.0.2", "GRPC_PORT": "6000"})
        assert s.server.advertise_address == "127.0.0.2:6000"
        assert s.election.renew_deadline == s.election.timeout - s.election.heartbeat_interval
