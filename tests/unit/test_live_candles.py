"""auditsvc.devtools.live_candles: the live feeds' candles pass every content rule
(a feed of identical candles is a frozen feed) and any writer makes the same one."""

from __future__ import annotations

from auditsvc.devtools.live_candles import live_candle
from auditsvc.domain.candle import Candle
from auditsvc.domain.content_audit import audit_candles
from auditsvc.domain.timeframes import parse_timeframe

T0 = 1_796_680_000_000


def as_candle(doc: dict[str, object], t_ms: int) -> Candle:
    return Candle(
        t_ms,
        float(doc["open"]),  # type: ignore[arg-type]
        float(doc["high"]),  # type: ignore[arg-type]
        float(doc["low"]),  # type: ignore[arg-type]
        float(doc["close"]),  # type: ignore[arg-type]
        float(doc["volume"]),  # type: ignore[arg-type]
    )


def test_no_content_finding_on_long_runs() -> None:
    for name, slots in (("1s", 20_000), ("1m", 5_000)):
        tf = parse_timeframe(name)
        for symbol in ("BTCUSDT", "ETHUSDT", "V0042USDT"):
            opens = [T0 // tf.nominal_ms * tf.nominal_ms + i * tf.nominal_ms for i in range(slots)]
            candles = [as_candle(live_candle(symbol, t, tf.nominal_ms), t) for t in opens]
            assert audit_candles(candles, tf, opens[-1] + tf.nominal_ms) == []


def test_same_candle_from_any_writer() -> None:
    assert live_candle("BTCUSDT", T0) == live_candle("BTCUSDT", T0)
    assert live_candle("BTCUSDT", T0) != live_candle("BTCUSDT", T0 + 1000)
