"""Settings from environment variables, validated once at start-up.

``Settings.from_env(environ)`` takes a Mapping rather than reading ``os.environ``
so that tests and tools can build settings without touching the process.
A bad value raises ``ConfigError`` naming the variable and what it accepts;
the CLI turns that into exit code 2. ``VARIABLES`` is the single list of every
variable with its default and meaning: the README table and the Kubernetes
ConfigMap are checked against it by the test suite.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from auditsvc.audit.errors import InvalidArgument
from auditsvc.audit.models import Strategy
from auditsvc.audit.timeframes import TIMEFRAMES, parse_timeframe


class ConfigError(ValueError):
    """A variable has a value the service cannot run with."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    doc: str
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("MONGODB_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string.", True),
    Variable("MONGODB_DATABASE", "market_data", "Database holding candles and audit state."),
    Variable("MONGODB_TIMEOUT_MS", "5000", "Server selection and socket timeout, ms."),
    Variable(
        "MONGODB_TRANSACTIONS", "auto", "auto: fence writes in transactions where supported; off."
    ),
    Variable("GRPC_HOST", "127.0.0.1", "Address the gRPC server binds."),
    Variable("GRPC_PORT", "50051", "gRPC port (0 picks a free one)."),
    Variable("GRPC_MAX_MESSAGE_BYTES", "4194304", "Largest request accepted, bytes."),
    Variable("METRICS_HOST", "127.0.0.1", "Address the Prometheus endpoint binds."),
    Variable("METRICS_PORT", "9464", "Prometheus /metrics port (0 disables)."),
    Variable("REPLICA_ID", "", "This replica's name; default: the hostname."),
    Variable("ADVERTISE_ADDRESS", "", "host:port peers reach us at; default GRPC_HOST:GRPC_PORT."),
    Variable("ENABLE_AUDITOR", "true", "Run the scheduled audit loop (leader only)."),
    Variable("AUDIT_INTERVAL", "300", "Seconds between scheduled cycles."),
    Variable("AUDIT_STARTUP_DELAY", "10", "Seconds before the first scheduled cycle."),
    Variable("AUDIT_SYMBOLS", "BTCUSDT,ETHUSDT", "Comma list of symbols to audit."),
    Variable("AUDIT_TIMEFRAMES", "1m,1h", "Comma list of timeframes to audit."),
    Variable(
        "CANDLE_COLLECTION_TEMPLATE",
        "candles_{symbol}_{timeframe}",
        "Candle collection name; takes {symbol} and {timeframe}.",
    ),
    Variable("AUDIT_LOOKBACK", "86400", "Default window length, seconds."),
    Variable("AUDIT_MIN_CANDLES", "30", "Default window covers at least this many slots."),
    Variable("AUDIT_CONCURRENCY", "10", "Series audited at once."),
    Variable("AUDIT_MAX_RANGE_CANDLES", "1000000", "Most expected slots one series may span."),
    Variable(
        "AUDIT_INGEST_GRACE", "10", "Seconds after a slot closes before its candle is expected."
    ),
    Variable("LIVE_MODE", "auto", "Live tail: auto, change_stream, poll or off (leader only)."),
    Variable("LIVE_POLL_INTERVAL", "1", "Seconds between live-tail polls and state checks."),
    Variable("ENABLE_AUTO_BACKFILL", "false", "Write backfill requests for long gaps."),
    Variable("MIN_AUTO_BACKFILL_GAP", "3600", "Shortest gap, seconds, that gets a backfill."),
    Variable("MAX_AUTO_BACKFILL_JOBS", "5", "Most backfill requests open at once."),
    Variable("ENABLE_DUPLICATE_REMOVAL", "false", "Allow ResolveDuplicates to delete."),
    Variable("DUPLICATE_RESOLUTION_STRATEGY", "keep_newest", "keep_newest, keep_oldest or manual."),
    Variable("DUPLICATE_VERSION_FIELD", "", "Field whose greatest value wins keep_newest."),
    Variable("ENABLE_LEADER_ELECTION", "true", "false: run alone as ROLE_STANDALONE, epoch 0."),
    Variable("LEADER_ELECTION_NAME", "auditsvc", "_id of the lease document."),
    Variable("LEADER_ELECTION_HEARTBEAT_INTERVAL", "10", "Seconds between renewals."),
    Variable("LEADER_ELECTION_TIMEOUT", "30", "Lease length, seconds; > 2 x heartbeat."),
    Variable("SHUTDOWN_GRACE", "10", "Seconds in-flight RPCs get to finish on SIGTERM."),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Variable("AUDIT_API_TOKEN", "", "Bearer token required for mutating RPCs.", True),
    Variable("AUDIT_API_TOKEN_FILE", "", "File holding the bearer token."),
    Variable("AUDIT_READS_REQUIRE_TOKEN", "false", "Require the token for reads too."),
    Variable("GRPC_TLS_CERT_FILE", "", "Server certificate (PEM); enables TLS."),
    Variable("GRPC_TLS_KEY_FILE", "", "Server private key (PEM)."),
    Variable("GRPC_TLS_CLIENT_CA_FILE", "", "CA for client certificates; enables mTLS."),
)

_T = TypeVar("_T")
_DEFAULTS = {v.name: v.default for v in VARIABLES}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    """Every setting the service runs with. Built only by ``from_env``/``replace``."""

    mongodb_uri: str
    mongodb_database: str
    mongodb_timeout_ms: int
    mongodb_transactions: bool
    grpc_host: str
    grpc_port: int
    grpc_max_message_bytes: int
    metrics_host: str
    metrics_port: int
    replica_id: str
    advertise_address: str
    enable_auditor: bool
    audit_interval: float
    audit_startup_delay: float
    audit_symbols: tuple[str, ...]
    audit_timeframes: tuple[str, ...]
    candle_collection_template: str
    audit_lookback: int
    audit_min_candles: int
    audit_concurrency: int
    audit_max_range_candles: int
    audit_ingest_grace: float
    live_mode: str
    live_poll_interval: float
    enable_auto_backfill: bool
    min_auto_backfill_gap: int
    max_auto_backfill_jobs: int
    enable_duplicate_removal: bool
    duplicate_resolution_strategy: Strategy
    duplicate_version_field: str | None
    enable_leader_election: bool
    leader_election_name: str
    heartbeat_interval: float
    election_timeout: float
    shutdown_grace: float
    log_level: str
    api_token: str | None = field(repr=False)
    reads_require_token: bool
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_client_ca_file: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = _Env(environ)
        host = env.text("GRPC_HOST")
        port = env.integer("GRPC_PORT", 0, 65535)
        settings = cls(
            mongodb_uri=env.text("MONGODB_URI"),
            mongodb_database=env.text("MONGODB_DATABASE"),
            mongodb_timeout_ms=env.integer("MONGODB_TIMEOUT_MS", 100, 600_000),
            mongodb_transactions=env.choice("MONGODB_TRANSACTIONS", ("auto", "off")) == "auto",
            grpc_host=host,
            grpc_port=port,
            grpc_max_message_bytes=env.integer("GRPC_MAX_MESSAGE_BYTES", 1024, 1 << 30),
            metrics_host=env.text("METRICS_HOST"),
            metrics_port=env.integer("METRICS_PORT", 0, 65535),
            replica_id=env.raw("REPLICA_ID") or socket.gethostname(),
            advertise_address=env.raw("ADVERTISE_ADDRESS") or f"{host}:{port}",
            enable_auditor=env.boolean("ENABLE_AUDITOR"),
            audit_interval=env.number("AUDIT_INTERVAL", 0.05),
            audit_startup_delay=env.number("AUDIT_STARTUP_DELAY", 0.0),
            audit_symbols=env.symbols("AUDIT_SYMBOLS"),
            audit_timeframes=env.timeframes("AUDIT_TIMEFRAMES"),
            candle_collection_template=env.template("CANDLE_COLLECTION_TEMPLATE"),
            audit_lookback=env.integer("AUDIT_LOOKBACK", 1, 10 * 365 * 86400),
            audit_min_candles=env.integer("AUDIT_MIN_CANDLES", 1, 1_000_000),
            audit_concurrency=env.integer("AUDIT_CONCURRENCY", 1, 1000),
            audit_max_range_candles=env.integer("AUDIT_MAX_RANGE_CANDLES", 1, 100_000_000),
            audit_ingest_grace=env.number("AUDIT_INGEST_GRACE", 0.0),
            live_mode=env.choice("LIVE_MODE", ("auto", "change_stream", "poll", "off")),
            live_poll_interval=env.number("LIVE_POLL_INTERVAL", 0.05),
            enable_auto_backfill=env.boolean("ENABLE_AUTO_BACKFILL"),
            min_auto_backfill_gap=env.integer("MIN_AUTO_BACKFILL_GAP", 0, 10 * 365 * 86400),
            max_auto_backfill_jobs=env.integer("MAX_AUTO_BACKFILL_JOBS", 0, 100_000),
            enable_duplicate_removal=env.boolean("ENABLE_DUPLICATE_REMOVAL"),
            duplicate_resolution_strategy=env.strategy("DUPLICATE_RESOLUTION_STRATEGY"),
            duplicate_version_field=env.raw("DUPLICATE_VERSION_FIELD") or None,
            enable_leader_election=env.boolean("ENABLE_LEADER_ELECTION"),
            leader_election_name=env.text("LEADER_ELECTION_NAME"),
            heartbeat_interval=env.number("LEADER_ELECTION_HEARTBEAT_INTERVAL", 0.05),
            election_timeout=env.number("LEADER_ELECTION_TIMEOUT", 0.1),
            shutdown_grace=env.number("SHUTDOWN_GRACE", 0.0),
            log_level=env.choice("LOG_LEVEL", _LOG_LEVELS, upper=True),
            api_token=env.token(),
            reads_require_token=env.boolean("AUDIT_READS_REQUIRE_TOKEN"),
            tls_cert_file=env.path("GRPC_TLS_CERT_FILE"),
            tls_key_file=env.path("GRPC_TLS_KEY_FILE"),
            tls_client_ca_file=env.path("GRPC_TLS_CLIENT_CA_FILE"),
        )
        settings._check_relations()
        return settings

    def _check_relations(self) -> None:
        if self.election_timeout <= 2 * self.heartbeat_interval:
            raise ConfigError(
                "LEADER_ELECTION_TIMEOUT",
                f"must be above twice LEADER_ELECTION_HEARTBEAT_INTERVAL "
                f"({self.election_timeout:g} <= 2 x {self.heartbeat_interval:g}); "
                "otherwise a leader could lose its lease between two renewals",
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "GRPC_TLS_KEY_FILE", "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("GRPC_TLS_CLIENT_CA_FILE", "mTLS needs GRPC_TLS_CERT_FILE too")

    @property
    def renew_deadline(self) -> float:
        """A leader that has not renewed for this long steps down on its own."""
        return self.election_timeout - self.heartbeat_interval

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    def collection_for(self, symbol: str, timeframe: str) -> str:
        return self.candle_collection_template.format(symbol=symbol, timeframe=timeframe)


class _Env:
    """Typed readers that raise ConfigError naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str:
        return self._environ.get(name, _DEFAULTS[name]).strip()

    def text(self, name: str) -> str:
        value = self.raw(name)
        if not value:
            raise ConfigError(name, "must not be empty")
        return value

    def _parse(self, name: str, parse: Callable[[str], _T], accepted: str) -> _T:
        value = self.raw(name)
        try:
            return parse(value)
        except ValueError:
            raise ConfigError(name, f"got {value!r}; accepted: {accepted}") from None

    def integer(self, name: str, low: int, high: int) -> int:
        value = self._parse(name, int, f"an integer from {low} to {high}")
        if not low <= value <= high:
            raise ConfigError(name, f"got {value}; accepted: an integer from {low} to {high}")
        return value

    def number(self, name: str, low: float) -> float:
        value = self._parse(name, float, f"a number of seconds >= {low:g}")
        if not value >= low or value != value or value == float("inf"):
            raise ConfigError(name, f"got {value}; accepted: a number of seconds >= {low:g}")
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name).lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"got {value!r}; accepted: true or false")

    def choice(self, name: str, accepted: tuple[str, ...], *, upper: bool = False) -> str:
        value = self.raw(name).upper() if upper else self.raw(name)
        if value not in accepted:
            raise ConfigError(name, f"got {value!r}; accepted: {', '.join(accepted)}")
        return value

    def strategy(self, name: str) -> Strategy:
        accepted = tuple(s.value for s in Strategy)
        return Strategy(self.choice(name, accepted))

    def symbols(self, name: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(s.strip() for s in self.raw(name).split(",") if s.strip()))
        if not items:
            raise ConfigError(name, "must list at least one symbol, e.g. BTCUSDT,ETHUSDT")
        for item in items:
            if not item.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ConfigError(name, f"got {item!r}; accepted: letters, digits, - _ .")
        return items

    def timeframes(self, name: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(s.strip() for s in self.raw(name).split(",") if s.strip()))
        if not items:
            raise ConfigError(name, f"must list at least one of {', '.join(TIMEFRAMES)}")
        for item in items:
            try:
                parse_timeframe(item)
            except InvalidArgument:
                raise ConfigError(
                    name, f"got {item!r}; accepted: {', '.join(TIMEFRAMES)}"
                ) from None
        return items

    def template(self, name: str) -> str:
        value = self.text(name)
        try:
            value.format(symbol="S", timeframe="T")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                name, f"got {value!r}; accepted: a name using only {{symbol}} and {{timeframe}}"
            ) from None
        return value

    def path(self, name: str) -> str | None:
        value = self.raw(name)
        if value and not Path(value).is_file():
            raise ConfigError(name, f"file {value!r} does not exist")
        return value or None

    def token(self) -> str | None:
        token = self.raw("AUDIT_API_TOKEN")
        file = self.path("AUDIT_API_TOKEN_FILE")
        if token and file:
            raise ConfigError("AUDIT_API_TOKEN_FILE", "set AUDIT_API_TOKEN or the file, not both")
        if file:
            token = Path(file).read_text().strip()
            if not token:
                raise ConfigError("AUDIT_API_TOKEN_FILE", "the file is empty")
        return token or None
