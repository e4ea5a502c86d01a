"""Settings from environment variables, in frozen sections, validated once at start-up.

Each setting is spelled once: a field of its section, whose metadata (see
:func:`setting`) names the variable, its default, its documentation and its
parser. ``VARIABLES`` (the README table, ``auditsvc --help``, the Kubernetes
ConfigMap check and the runbook check) is derived from those fields, so a new
setting cannot be forgotten in any of them.

``Settings.from_env(environ)`` takes a Mapping rather than reading
``os.environ`` so that tests and tools can build settings without touching the
process. A bad value raises ``ConfigError`` naming the variable and what it
accepts; the CLI turns that into exit code 2. Each use case receives only its
own section (``settings.audit``, ``settings.duplicates``, ...), so what a part
can be configured by is visible from its constructor.

Variable names are the ones the first release used; none was renamed.
"""

from __future__ import annotations

import dataclasses
import socket
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.errors import InvalidArgument
from auditsvc.domain.timeframes import TIMEFRAMES, parse_timeframe
from auditsvc.domain.values import Strategy

_T = TypeVar("_T")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LIVE_MODES = ("auto", "change_stream", "poll", "off")


class ConfigError(ValueError):
    """A variable has a value the service cannot run with."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, default, meaning and whether it is secret."""

    name: str
    default: str
    doc: str
    secret: bool = False


# A parser turns the variable's raw text into the field's value or raises ConfigError.
Parser = Callable[["_Env", str], Any]


def setting(name: str, default: str, doc: str, parse: Parser, *, secret: bool = False) -> Any:
    """A section field read from variable ``name`` (the one place it is spelled)."""
    return field(
        metadata={"variable": Variable(name, default, doc, secret), "parse": parse},
        repr=not secret,
    )


# Parsers, composed per field below.
def _text(env: _Env, name: str) -> str:
    return env.text(name)


def _raw(env: _Env, name: str) -> str:
    return env.raw(name)


def _integer(low: int, high: int) -> Parser:
    return lambda env, name: env.integer(name, low, high)


def _number(low: float) -> Parser:
    return lambda env, name: env.number(name, low)


def _boolean(env: _Env, name: str) -> bool:
    return env.boolean(name)


def _choice(accepted: tuple[str, ...], *, upper: bool = False) -> Parser:
    return lambda env, name: env.choice(name, accepted, upper=upper)


def _optional(env: _Env, name: str) -> str | None:
    return env.raw(name) or None


def _path(env: _Env, name: str) -> str | None:
    return env.path(name)


@dataclass(frozen=True)
class MongoSettings:
    """Where the candles and the audit state live, and how to reach them."""

    uri: str = setting(
        "MONGODB_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string.", _text, secret=True
    )
    database: str = setting(
        "MONGODB_DATABASE", "market_data", "Database holding candles and audit state.", _text
    )
    timeout_ms: int = setting(
        "MONGODB_TIMEOUT_MS",
        "5000",
        "Server selection and socket timeout, ms.",
        _integer(100, 600_000),
    )
    transactions: bool = setting(
        "MONGODB_TRANSACTIONS",
        "auto",
        "auto: fence writes in transactions where supported; off.",
        lambda env, name: env.choice(name, ("auto", "off")) == "auto",
    )


@dataclass(frozen=True)
class ServerSettings:
    """The gRPC server, this replica's identity and its shutdown."""

    host: str = setting("GRPC_HOST", "127.0.0.1", "Address the gRPC server binds.", _text)
    port: int = setting("GRPC_PORT", "50051", "gRPC port (0 picks a free one).", _integer(0, 65535))
    max_message_bytes: int = setting(
        "GRPC_MAX_MESSAGE_BYTES",
        "4194304",
        "Largest request accepted, bytes.",
        _integer(1024, 1 << 30),
    )
    replica_id: str = setting(
        "REPLICA_ID",
        "",
        "This replica's name; default: the hostname.",
        lambda env, name: env.raw(name) or socket.gethostname(),
    )
    advertise_address: str = setting(
        "ADVERTISE_ADDRESS",
        "",
        "host:port peers reach us at; default GRPC_HOST:GRPC_PORT.",
        _raw,  # completed from host and port in Settings.from_env
    )
    shutdown_grace: float = setting(
        "SHUTDOWN_GRACE", "10", "Seconds in-flight RPCs get to finish on SIGTERM.", _number(0.0)
    )


@dataclass(frozen=True)
class OpsSettings:
    """Metrics and logging."""

    metrics_host: str = setting(
        "METRICS_HOST", "127.0.0.1", "Address the Prometheus endpoint binds.", _text
    )
    metrics_port: int = setting(
        "METRICS_PORT", "9464", "Prometheus /metrics port (0 disables).", _integer(0, 65535)
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR.", _choice(_LOG_LEVELS, upper=True)
    )


def _symbols(env: _Env, name: str) -> tuple[str, ...]:
    return env.symbols(name, SYMBOLS_FILE)


SYMBOLS_FILE = "AUDIT_SYMBOLS_FILE"


def _timeframes(env: _Env, name: str) -> tuple[str, ...]:
    return env.timeframes(name)


def _template(env: _Env, name: str) -> str:
    return env.template(name)


@dataclass(frozen=True)
class AuditSettings:
    """What is audited, over which window, and how often."""

    enabled: bool = setting(
        "ENABLE_AUDITOR", "true", "Run the scheduled audit loop (leader only).", _boolean
    )
    interval: float = setting(
        "AUDIT_INTERVAL", "300", "Seconds between scheduled cycles.", _number(0.05)
    )
    startup_delay: float = setting(
        "AUDIT_STARTUP_DELAY", "10", "Seconds before the first scheduled cycle.", _number(0.0)
    )
    symbols: tuple[str, ...] = setting(
        "AUDIT_SYMBOLS", "BTCUSDT,ETHUSDT", "Comma list of symbols to audit.", _symbols
    )
    # Read by the AUDIT_SYMBOLS parser: an exchange's symbols outgrow one environment
    # string (Linux caps it at 128 KiB, about 15,000 symbols of eight characters).
    symbols_file: str | None = setting(
        SYMBOLS_FILE,
        "",
        "File of symbols (commas or lines); replaces AUDIT_SYMBOLS, which must be empty.",
        _path,
    )
    timeframes: tuple[str, ...] = setting(
        "AUDIT_TIMEFRAMES", "1m,1h", "Comma list of timeframes to audit.", _timeframes
    )
    collection_template: str = setting(
        "CANDLE_COLLECTION_TEMPLATE",
        "candles_{symbol}_{timeframe}",
        "Candle collection name; takes {symbol} and {timeframe}.",
        _template,
    )
    lookback: int = setting(
        "AUDIT_LOOKBACK", "86400", "Default window length, seconds.", _integer(1, 10 * 365 * 86400)
    )
    min_candles: int = setting(
        "AUDIT_MIN_CANDLES",
        "30",
        "Default window covers at least this many slots.",
        _integer(1, 1_000_000),
    )
    concurrency: int = setting(
        "AUDIT_CONCURRENCY", "10", "Series audited at once.", _integer(1, 1000)
    )
    max_range_candles: int = setting(
        "AUDIT_MAX_RANGE_CANDLES",
        "1000000",
        "Most expected slots one series may span.",
        _integer(1, 100_000_000),
    )
    ingest_grace: float = setting(
        "AUDIT_INGEST_GRACE",
        "10",
        "Seconds after a slot closes before its candle is expected.",
        _number(0.0),
    )
    max_gaps_per_series: int = setting(
        "AUDIT_MAX_GAPS_PER_SERIES",
        "1000",
        "Gaps stored per series (the newest); reports count the rest.",
        _integer(1, 1_000_000),
    )
    recheck: float = setting(
        "AUDIT_RECHECK",
        "3600",
        "Seconds before the last watermark an incremental cycle re-reads.",
        _number(0.0),
    )
    full_scan_every: int = setting(
        "AUDIT_FULL_SCAN_EVERY",
        "12",
        "A series' default-window audit is a full scan every this many cycles.",
        _integer(1, 1_000_000),
    )

    def collection_for(self, symbol: str, timeframe: str) -> str:
        return self.collection_template.format(symbol=symbol, timeframe=timeframe)


@dataclass(frozen=True)
class BackfillSettings:
    """Backfill requests written for long gaps."""

    enabled: bool = setting(
        "ENABLE_AUTO_BACKFILL", "false", "Write backfill requests for long gaps.", _boolean
    )
    min_gap: int = setting(
        "MIN_AUTO_BACKFILL_GAP",
        "3600",
        "Shortest gap, seconds, that gets a backfill.",
        _integer(0, 10 * 365 * 86400),
    )
    max_jobs: int = setting(
        "MAX_AUTO_BACKFILL_JOBS", "5", "Most backfill requests open at once.", _integer(0, 100_000)
    )
    timeout: int = setting(
        "BACKFILL_TIMEOUT",
        "3600",
        "Seconds a request may leave its gap unshrunk before it expires; also the first backoff.",
        _integer(1, 30 * 86400),
    )
    max_attempts: int = setting(
        "BACKFILL_MAX_ATTEMPTS",
        "3",
        "Requests a gap gets before it is UNFILLABLE.",
        _integer(1, 1000),
    )
    history_retention: int = setting(
        "GAP_HISTORY_RETENTION",
        "604800",
        "Seconds filled, unfillable and acknowledged gaps stay listed.",
        _integer(60, 365 * 86400),
    )


@dataclass(frozen=True)
class DuplicateSettings:
    """Whether and how duplicate candles are removed."""

    removal_enabled: bool = setting(
        "ENABLE_DUPLICATE_REMOVAL", "false", "Allow ResolveDuplicates to delete.", _boolean
    )
    strategy: Strategy = setting(
        "DUPLICATE_RESOLUTION_STRATEGY",
        "keep_newest",
        "keep_newest, keep_oldest or manual.",
        lambda env, name: env.strategy(name),
    )
    version_field: str | None = setting(
        "DUPLICATE_VERSION_FIELD", "", "Field whose greatest value wins keep_newest.", _optional
    )


@dataclass(frozen=True)
class ElectionSettings:
    """The lease that elects one leader among the replicas."""

    enabled: bool = setting(
        "ENABLE_LEADER_ELECTION",
        "true",
        "false: run alone as ROLE_STANDALONE, epoch 0.",
        _boolean,
    )
    name: str = setting("LEADER_ELECTION_NAME", "auditsvc", "_id of the lease document.", _text)
    heartbeat_interval: float = setting(
        "LEADER_ELECTION_HEARTBEAT_INTERVAL", "10", "Seconds between renewals.", _number(0.05)
    )
    timeout: float = setting(
        "LEADER_ELECTION_TIMEOUT", "30", "Lease length, seconds; > 2 x heartbeat.", _number(0.1)
    )

    @property
    def renew_deadline(self) -> float:
        """A leader that has not renewed for this long steps down on its own."""
        return self.timeout - self.heartbeat_interval


@dataclass(frozen=True)
class SecuritySettings:
    """Bearer-token authentication and TLS."""

    api_token: str | None = setting(
        "AUDIT_API_TOKEN",
        "",
        "Bearer token required for mutating RPCs.",
        _optional,  # or read from AUDIT_API_TOKEN_FILE in Settings.from_env
        secret=True,
    )
    api_token_file: str | None = setting(
        "AUDIT_API_TOKEN_FILE", "", "File holding the bearer token.", _path
    )
    reads_require_token: bool = setting(
        "AUDIT_READS_REQUIRE_TOKEN", "false", "Require the token for reads too.", _boolean
    )
    tls_cert_file: str | None = setting(
        "GRPC_TLS_CERT_FILE", "", "Server certificate (PEM); enables TLS.", _path
    )
    tls_key_file: str | None = setting("GRPC_TLS_KEY_FILE", "", "Server private key (PEM).", _path)
    tls_client_ca_file: str | None = setting(
        "GRPC_TLS_CLIENT_CA_FILE", "", "CA for client certificates; enables mTLS.", _path
    )

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class LiveSettings:
    """The leader's live tail of the candle collections."""

    mode: str = setting(
        "LIVE_MODE",
        "auto",
        "Live tail: auto, change_stream, poll or off (leader only).",
        _choice(_LIVE_MODES),
    )
    poll_interval: float = setting(
        "LIVE_POLL_INTERVAL",
        "1",
        "Seconds between live-tail polls and state checks.",
        _number(0.05),
    )
    stale_after: float = setting(
        "LIVE_STALE_AFTER",
        "5",
        "Seconds after the leader's last confirmation past which a replica serves "
        "UNKNOWN; above LIVE_POLL_INTERVAL and the 1 s heartbeat.",
        _number(0.1),
    )

    @property
    def heartbeat(self) -> float:
        """Seconds between the tail's confirmations: every poll, at most 1 s apart."""
        return min(self.poll_interval, 1.0)


def _fraction(env: _Env, name: str) -> float:
    return env.fraction(name)


def _field_name(env: _Env, name: str) -> str | None:
    return env.field_name(name)


@dataclass(frozen=True)
class ContentSettings:
    """The candle content checks (docs/CANDLE_RULES.md): what cycles read and judge.

    The ANOMALY_* parameters become one ``AnomalyConfig`` (``anomaly_config``),
    validated with the others at start-up.
    """

    enabled: bool = setting(
        "ENABLE_CONTENT_CHECKS",
        "true",
        "Cycles read candle values and store content findings (ListAnomalies).",
        _boolean,
    )
    suspect_slots: int = setting(
        "VALIDITY_SUSPECT_SLOTS",
        "60",
        "A series is suspect while a finding lies within this many slots of its live edge.",
        _integer(1, 1_000_000),
    )
    close_time_field: str | None = setting(
        "CANDLE_CLOSE_TIME_FIELD",
        "",
        "Candle field holding the close time (CLOSE_TIME_INVALID); empty: not checked.",
        _field_name,
    )
    trades_field: str | None = setting(
        "CANDLE_TRADES_FIELD",
        "",
        "Candle field holding the trade count (TRADES_WITHOUT_VOLUME); empty: not checked.",
        _field_name,
    )
    taker_buy_volume_field: str | None = setting(
        "CANDLE_TAKER_BUY_VOLUME_FIELD",
        "",
        "Candle field holding the taker-buy volume (TAKER_ABOVE_VOLUME); empty: not checked.",
        _field_name,
    )
    quote_volume_field: str | None = setting(
        "CANDLE_QUOTE_VOLUME_FIELD",
        "",
        "Candle field holding the quote volume (QUOTE_VOLUME_OUTSIDE_RANGE); empty: not checked.",
        _field_name,
    )
    price_rel_tol: float = setting(
        "ANOMALY_PRICE_REL_TOL",
        "1e-9",
        "Relative tolerance of price orderings and aggregate prices.",
        _fraction,
    )
    quote_rel_tol: float = setting(
        "ANOMALY_QUOTE_REL_TOL",
        "1e-6",
        "Relative slack on quote volume / volume lying within [low, high].",
        _fraction,
    )
    volume_rel_tol: float = setting(
        "ANOMALY_VOLUME_REL_TOL",
        "1e-6",
        "Relative tolerance between a higher candle's volume and its children's sum.",
        _fraction,
    )
    future_grace_ms: int = setting(
        "ANOMALY_FUTURE_GRACE_MS",
        "5000",
        "Clock skew, ms, allowed past now + one slot before TIME_IN_FUTURE.",
        _integer(0, 86_400_000),
    )
    close_time_offset_ms: int = setting(
        "ANOMALY_CLOSE_TIME_OFFSET_MS",
        "-1",
        "Expected close time = next slot's open + this, ms (Binance: -1).",
        _integer(-86_400_000, 86_400_000),
    )
    spike_window: int = setting(
        "ANOMALY_SPIKE_WINDOW",
        "60",
        "Non-zero moves whose median absolute log return is a spike's scale.",
        _integer(2, 100_000),
    )
    spike_min_history: int = setting(
        "ANOMALY_SPIKE_MIN_HISTORY",
        "20",
        "Non-zero moves a series needs before any candle is judged a spike.",
        _integer(1, 100_000),
    )
    spike_multiple: float = setting(
        "ANOMALY_SPIKE_MULTIPLE",
        "20",
        "A spike departs from the previous close by more than this many scales.",
        lambda env, name: env.positive(name),
    )
    spike_min_move: float = setting(
        "ANOMALY_SPIKE_MIN_MOVE",
        "0.10",
        "...and by more than this fraction (0.10 = 10 %) whatever the scale.",
        lambda env, name: env.positive(name),
    )
    spike_revert_fraction: float = setting(
        "ANOMALY_SPIKE_REVERT_FRACTION",
        "0.25",
        "The next candle reverts a spike when back within this fraction of it.",
        _fraction,
    )
    spike_apart_multiple: float = setting(
        "ANOMALY_SPIKE_APART_MULTIPLE",
        "1.5",
        "A next candle this many thresholds away may revert within twice the fraction.",
        lambda env, name: env.positive(name),
    )
    frozen_min_run: int = setting(
        "ANOMALY_FROZEN_MIN_RUN",
        "60",
        "Identical candles (zero or repeated volume) that make a frozen feed.",
        _integer(2, 1_000_000),
    )

    def anomaly_config(self) -> AnomalyConfig:
        """The rules' parameters; ValueError (one line) when they do not fit together."""
        return AnomalyConfig(
            price_rel_tol=self.price_rel_tol,
            quote_rel_tol=self.quote_rel_tol,
            future_grace_ms=self.future_grace_ms,
            close_time_offset_ms=self.close_time_offset_ms,
            spike_window=self.spike_window,
            spike_min_history=self.spike_min_history,
            spike_multiple=self.spike_multiple,
            spike_min_move=self.spike_min_move,
            spike_revert_fraction=self.spike_revert_fraction,
            spike_apart_multiple=self.spike_apart_multiple,
            frozen_min_run=self.frozen_min_run,
            volume_rel_tol=self.volume_rel_tol,
        )


@dataclass(frozen=True)
class Settings:
    """Every setting the service runs with, by section. Built only by ``from_env``."""

    mongo: MongoSettings
    server: ServerSettings
    ops: OpsSettings
    audit: AuditSettings
    live: LiveSettings
    backfill: BackfillSettings
    duplicates: DuplicateSettings
    election: ElectionSettings
    security: SecuritySettings
    content: ContentSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = _Env(environ)
        sections: dict[str, Any] = {name: _build(kind, env) for name, kind in SECTIONS}
        server: ServerSettings = sections["server"]
        if not server.advertise_address:
            sections["server"] = dataclasses.replace(
                server, advertise_address=f"{server.host}:{server.port}"
            )
        sections["security"] = _with_token_file(sections["security"])
        settings = cls(**sections)
        settings._check_relations()
        return settings

    def _check_relations(self) -> None:
        e = self.election
        if e.timeout <= 2 * e.heartbeat_interval:
            raise ConfigError(
                "LEADER_ELECTION_TIMEOUT",
                f"must be above twice LEADER_ELECTION_HEARTBEAT_INTERVAL "
                f"({e.timeout:g} <= 2 x {e.heartbeat_interval:g}); "
                "otherwise a leader could lose its lease between two renewals",
            )
        live = self.live
        if live.mode != "off" and live.stale_after <= max(live.poll_interval, live.heartbeat):
            raise ConfigError(
                "LIVE_STALE_AFTER",
                f"must be above LIVE_POLL_INTERVAL and the 1 s heartbeat "
                f"({live.stale_after:g} <= {max(live.poll_interval, live.heartbeat):g}); "
                "otherwise every verdict would read UNKNOWN between two confirmations",
            )
        sec = self.security
        if bool(sec.tls_cert_file) != bool(sec.tls_key_file):
            raise ConfigError(
                "GRPC_TLS_KEY_FILE", "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together"
            )
        if sec.tls_client_ca_file and not sec.tls_cert_file:
            raise ConfigError("GRPC_TLS_CLIENT_CA_FILE", "mTLS needs GRPC_TLS_CERT_FILE too")
        try:
            self.content.anomaly_config()
        except ValueError as exc:
            # AnomalyConfig names the parameter first, except for the window relation.
            first = str(exc).split()[0]
            variable = (
                "ANOMALY_SPIKE_MIN_HISTORY" if first == "need" else f"ANOMALY_{first.upper()}"
            )
            raise ConfigError(variable, str(exc)) from None
        a = self.audit
        if len(a.timeframes) > 1 and "timeframe" not in _template_fields(a.collection_template):
            # Every timeframe would read the same collection: all but the one whose
            # candles it holds would read NO_DATA for ever.
            raise ConfigError(
                "CANDLE_COLLECTION_TEMPLATE",
                f"got {a.collection_template!r} without {{timeframe}}, but AUDIT_TIMEFRAMES "
                f"lists {len(a.timeframes)} timeframes; add {{timeframe}} or audit one",
            )


def _template_fields(template: str) -> set[str]:
    """The names of the replacement fields of a ``str.format`` template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


# The sections in the order the variables table lists them.
SECTIONS: tuple[tuple[str, type], ...] = (
    ("mongo", MongoSettings),
    ("server", ServerSettings),
    ("ops", OpsSettings),
    ("audit", AuditSettings),
    ("live", LiveSettings),
    ("backfill", BackfillSettings),
    ("duplicates", DuplicateSettings),
    ("election", ElectionSettings),
    ("security", SecuritySettings),
    ("content", ContentSettings),
)


def _fields(kind: type) -> Iterator[tuple[str, Variable, Parser]]:
    for f in dataclasses.fields(kind):
        yield f.name, f.metadata["variable"], f.metadata["parse"]


def _build(kind: type[_T], env: _Env) -> _T:
    values = {name: parse(env, variable.name) for name, variable, parse in _fields(kind)}
    return kind(**values)


def _with_token_file(security: SecuritySettings) -> SecuritySettings:
    if security.api_token and security.api_token_file:
        raise ConfigError("AUDIT_API_TOKEN_FILE", "set AUDIT_API_TOKEN or the file, not both")
    if not security.api_token_file:
        return security
    token = Path(security.api_token_file).read_text().strip()
    if not token:
        raise ConfigError("AUDIT_API_TOKEN_FILE", "the file is empty")
    return dataclasses.replace(security, api_token=token)


VARIABLES: tuple[Variable, ...] = tuple(
    variable for _, kind in SECTIONS for _, variable, _ in _fields(kind)
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


def variables_table() -> str:
    """The Markdown table of every variable, as README.md and ``auditsvc --help`` show it."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for v in VARIABLES:
        rows.append(f"| `{v.name}` | `{v.default}` | {v.doc} |")
    return "\n".join(rows)


def _symbol_list(name: str, text: str) -> tuple[str, ...]:
    """Comma-separated symbols, deduplicated in order; blanks ignored."""
    items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not items:
        raise ConfigError(name, "must list at least one symbol, e.g. BTCUSDT,ETHUSDT")
    for item in items:
        if not item.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(name, f"got {item[:64]!r}; accepted: letters, digits, - _ .")
    return items


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

    def fraction(self, name: str) -> float:
        """A number in [0, 1)."""
        value = self._parse(name, float, "a number from 0 up to 1 (excluded)")
        if not 0 <= value < 1:
            raise ConfigError(name, f"got {value}; accepted: a number from 0 up to 1 (excluded)")
        return value

    def positive(self, name: str) -> float:
        """A finite number > 0."""
        value = self._parse(name, float, "a number > 0")
        if not (0 < value < float("inf")):
            raise ConfigError(name, f"got {value}; accepted: a number > 0")
        return value

    def field_name(self, name: str) -> str | None:
        """A document field name (dotted path allowed), or None when empty."""
        value = self.raw(name)
        if not value:
            return None
        if value.startswith("$") or any(not part for part in value.split(".")):
            raise ConfigError(name, f"got {value!r}; accepted: a field name like close_time")
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

    def symbols(self, name: str, file_name: str) -> tuple[str, ...]:
        """The symbols of ``name``, or of the file ``file_name`` names (one, not both)."""
        path = self.path(file_name)
        if path is None:
            return _symbol_list(name, self.raw(name))
        if self._environ.get(name, "").strip():
            raise ConfigError(file_name, f'set {name} or {file_name}, not both ({name}="")')
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(file_name, f"cannot read {path!r}: {exc}") from None
        return _symbol_list(file_name, text.replace("\n", ","))

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
