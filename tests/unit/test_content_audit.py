"""Unit tests for auditsvc.domain.content_audit: every single-series rule in one pass."""

from __future__ import annotations

from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.candle import Candle
from auditsvc.domain.content_audit import ContentAuditor, audit_candles
from auditsvc.domain.timeframes import parse_timeframe

M = 60_000
T0 = 1_704_067_200_000
ONE_MIN = parse_timeframe("1m")
NOW = T0 + 300 * M
R = AnomalyRule


def series() -> list[Candle]:
    """Moving candles with a bad high at 30, a spike at 50 and a frozen hour from 70."""
    out = []
    for i in range(200):
        px = 100.0 + (i % 2)
        c = Candle(T0 + i * M, px, px, px, px, 1.0 + i / 100)
        if i == 30:
            c = Candle(c.open_time_ms, 101.0, 100.0, 100.0, 100.0, 1.0)
        elif i == 50:
            c = Candle(c.open_time_ms, px, px * 5, px, px, 1.0)
        elif 70 <= i < 130:
            c = Candle(c.open_time_ms, 100.0, 100.0, 100.0, 100.0, 0.0)
        out.append(c)
    return out


class TestContentAuditor:
    """The one-pass auditor finds what each rule finds, streaming as in a batch."""

    def test_batch(self) -> None:
        """Each injected fault is found under its rule, and nothing else."""
        found = {(a.open_time_ms - T0) // M: a.rule for a in audit_candles(series(), ONE_MIN, NOW)}
        frozen = {i: R.FROZEN_FEED for i in range(70, 130)}
        assert found == {30: R.HIGH_BELOW_BODY, 50: R.PRICE_SPIKE, **frozen}

    def test_stream_equals_batch(self) -> None:
        """Pushing one candle at a time gives the same findings, each when it is certain."""
        auditor = ContentAuditor(ONE_MIN)
        when = {}
        for i, c in enumerate(series()):
            for a in auditor.push(c, NOW):
                when[(a.open_time_ms - T0) // M] = i
        assert when[30] == 30 and when[50] == 51 and when[70] == 129 and when[129] == 129
        assert len(when) == len(audit_candles(series(), ONE_MIN, NOW))
