"""Candle timestamps are decoded from raw BSON without raising, whatever their type
or date: SecantusDB refuses to store a date past year 9999, MongoDB stores it, so
that case is built here as the bytes a server would send."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from bson import Int64, Timestamp
from bson.datetime_ms import DatetimeMS
from prometheus_client import CollectorRegistry

from auditsvc.ops.metrics import Metrics
from auditsvc.storage.mongo.candle_time import (
    CANDLE_CODEC,
    IgnoredCandles,
    candle_time_ms,
    ignored_reason,
)

OPEN = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)
OPEN_MS = 1_772_460_000_000
# 10000-01-01T00:00Z in ms since the epoch: one past what Python's datetime holds.
YEAR_10000_MS = 253_402_300_800_000


def candle(timestamp: Any) -> bytes:
    """A 1h candle as a server would send it, with ``timestamp`` as given."""
    doc: dict[str, Any] = {"symbol": "BTCUSDT", "open": 84_210.5, "close": 84_377.1}
    if timestamp is not None:
        doc["timestamp"] = timestamp
    return bson.encode(doc)


def decoded(raw: bytes) -> Any:
    return bson.decode(raw, codec_options=CANDLE_CODEC).get("timestamp")


def ignored(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("auditsvc_candles_ignored_total", {"reason": reason})
    return value or 0.0


class TestDecode:
    """CANDLE_CODEC decodes every timestamp; candle_time_ms keeps only usable dates."""

    def test_a_date_decodes_to_its_milliseconds(self) -> None:
        """An ordinary BSON date is its open time in ms."""
        assert candle_time_ms(decoded(candle(OPEN))) == OPEN_MS

    def test_default_decoder_raises_on_year_10000(self) -> None:
        """The driver's default decoding raises, which is what the tail met."""
        with pytest.raises(Exception, match="out of range"):
            bson.decode(candle(DatetimeMS(YEAR_10000_MS)))

    @pytest.mark.parametrize(
        ("timestamp", "reason"),
        [
            (DatetimeMS(YEAR_10000_MS), "out_of_range"),
            (DatetimeMS(-62_135_596_800_001), "out_of_range"),
            (Timestamp(1_772_460_000, 1), "wrong_type"),
            ("2026-03-02T14:00:00Z", "wrong_type"),
            (Int64(OPEN_MS), "wrong_type"),
            (OPEN_MS / 1000, "wrong_type"),
            (None, "missing"),
        ],
    )
    def test_hostile_timestamps_are_ignored_with_a_reason(
        self, timestamp: Any, reason: str
    ) -> None:
        """Out-of-range dates and other BSON types decode, yield None, and say why."""
        value = decoded(candle(timestamp))
        assert candle_time_ms(value) is None
        assert ignored_reason(value) == reason


class TestIgnoredCandles:
    """Skipped candles are counted by reason and logged once per series."""

    def test_counts_each_and_logs_once_per_series(self, caplog: pytest.LogCaptureFixture) -> None:
        """Three skipped candles of one series: counted three times, one log line."""
        metrics = Metrics(CollectorRegistry())
        skipper = IgnoredCandles(metrics)
        for _ in range(2):
            assert skipper.time_ms("klines_1h", "BTCUSDT", decoded(candle(Timestamp(1, 1)))) is None
        assert skipper.time_ms("klines_1h", "BTCUSDT", "2026-03-02") is None
        assert skipper.time_ms("klines_1h", "BTCUSDT", decoded(candle(OPEN))) == OPEN_MS
        assert ignored(metrics, "wrong_type") == 3
        assert ignored(metrics, "out_of_range") == 0
        lines = [r for r in caplog.records if "candle ignored" in r.getMessage()]
        assert len(lines) == 1
