"""Demo candles with known gaps, duplicates and bad candles, for `make run` and the tests.

``demo_series`` is pure: given an end time it returns the documents and what an
audit must find in them, so tests can assert exact numbers. ``plant_anomalies``
then spoils a few candles of one series on purpose, one or more of each content
rule, and says which.

Guarantees:

* :func:`demo_candle` is a pure function of (symbol price, timeframe, open time)
  whose candles are consistent across timeframes: a higher candle is exactly the
  aggregate of its children (``1s`` candles split each minute's path; every
  timeframe from ``1m`` up aggregates the minutes), so the seeded data, the demo
  feed and the demo backfill agree, and clean demo data yields no content
  finding (the prices drift smoothly and every candle differs from the last).
* ``demo_series`` keeps its gaps and duplicates where they always were; a
  duplicate is the same candle written twice (a retried insert), so it breaks no
  content rule, nor the aggregate of a duplicated higher slot.
* :func:`plant_anomalies` spoils only candles away from gaps, duplicates, the
  newest ``away_from_edge`` slots and the ``protected`` children of stored
  higher candles, and :func:`plant_mismatch` only a higher candle whose children
  are whole: the findings on the demo data are exactly the planted ones.

Limits: ``TIME_IN_FUTURE`` is not planted (a future candle would become the demo
feed's newest and stop it), nor the rules on optional fields the demo documents
do not carry (close time, trades, taker-buy and quote volume). A ``1M`` candle
aggregates some 44,640 minutes, so seeding monthly series takes seconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from auditsvc.domain.aggregates import child_timeframe
from auditsvc.domain.anomalies import AnomalyRule
from auditsvc.domain.anomaly_config import AnomalyConfig
from auditsvc.domain.timeframes import parse_timeframe

_MINUTE_MS = 60_000
_MASK = (1 << 64) - 1
R = AnomalyRule


@dataclass(frozen=True)
class Expected:
    gaps: tuple[tuple[int, int], ...]  # (start_ms, missing)
    duplicate_slots: tuple[int, ...]


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def demo_price(symbols: Collection[str], symbol: str) -> float:
    """The demo's price level of ``symbol``: 100 for the first configured, 200 for the next..."""
    ordered = list(symbols)
    return 100.0 * (ordered.index(symbol) + 1 if symbol in ordered else 1)


def _unit(key: int) -> float:
    """A uniform number in [0, 1) from an integer (splitmix64): no state, no random module."""
    z = (key * 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def _level(price: float, minute: int) -> float:
    return price * (1 + 0.02 * math.sin(minute / 157.0) + 0.01 * math.sin(minute / 1013.0))


def _minute(price: float, m: int) -> tuple[float, float, float, float, float]:
    """(open, high, low, close, volume) of minute ``m``: a smooth drift plus a wick each side."""
    key = (round(price) * 1_000_003 + m) * 4
    o, c = _level(price, m), _level(price, m + 1)
    h = max(o, c) * (1.0005 + 0.001 * _unit(key))
    lo = min(o, c) * (0.9995 - 0.001 * _unit(key + 1))
    return o, h, lo, c, round(5.0 + 10.0 * _unit(key + 2), 4)


def _second(price: float, t_ms: int) -> tuple[float, float, float, float, float]:
    """One second of its minute's path: open -> one extreme -> the other -> close."""
    m, k = divmod(t_ms // 1000, 60)
    o, h, lo, c, v = _minute(price, m)
    key = (round(price) * 1_000_003 + m) * 4 + 3
    first, second = (h, lo) if _unit(key) < 0.5 else (lo, h)
    points = ((0, o), (20, first), (40, second), (60, c))

    def at(s: int) -> float:
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if s == x0:
                return y0
            if s < x1:
                return y0 + (y1 - y0) * (s - x0) / (x1 - x0)
        return c

    a, b = at(k), at(k + 1)
    return a, max(a, b), min(a, b), b, v / 60


def demo_candle(symbol: str, timeframe: str, t_ms: int, price: float) -> dict[str, Any]:
    """The demo document of ``symbol``'s ``timeframe`` candle opening at ``t_ms``."""
    tf = parse_timeframe(timeframe)
    if tf.name == "1s":
        o, h, lo, c, v = _second(price, t_ms)
    else:
        first, end = t_ms // _MINUTE_MS, tf.next_open(t_ms) // _MINUTE_MS
        minutes = [_minute(price, m) for m in range(first, end)]
        o, c = minutes[0][0], minutes[-1][3]
        h, lo = max(x[1] for x in minutes), min(x[2] for x in minutes)
        v = math.fsum(x[4] for x in minutes)
    doc = {"symbol": symbol, "timestamp": _dt(t_ms)}
    return doc | {"open": o, "high": h, "low": lo, "close": c, "volume": v}


def demo_series(
    symbol: str, timeframe: str, end_ms: int, slots: int, price: float = 100.0
) -> tuple[list[dict[str, Any]], Expected]:
    """``slots`` candles ending before the slot containing ``end_ms``, with two gaps
    (one of 3 slots, one of 90 slots or a quarter of the series) and 3 duplicates."""
    tf = parse_timeframe(timeframe)
    end = tf.floor(end_ms)
    start = tf.shift(end, -slots)
    opens = list(tf.iter_opens(start, end))
    short = (len(opens) // 4, 3)
    long_len = min(90, max(2, len(opens) // 4))
    long = (len(opens) // 2, long_len)
    missing = set(range(short[0], short[0] + short[1])) | set(range(long[0], long[0] + long[1]))
    dup_idx = (len(opens) // 8, len(opens) * 3 // 4, len(opens) - 2)
    docs: list[dict[str, Any]] = []
    for i, t in enumerate(opens):
        if i in missing:
            continue
        candle = demo_candle(symbol, timeframe, t, price)
        docs.append(candle)
        if i in dup_idx:
            docs.append(dict(candle))  # a retried insert: same values, another document
    expected = Expected(
        gaps=((opens[short[0]], short[1]), (opens[long[0]], long[1])),
        duplicate_slots=tuple(opens[i] for i in dup_idx),
    )
    return docs, expected


def _ms(doc: dict[str, Any]) -> int:
    opened: dt.datetime = doc["timestamp"]
    return round(opened.timestamp() * 1000)


def plant_anomalies(
    docs: list[dict[str, Any]],
    timeframe: str,
    protected: Collection[int] = (),
    away_from_edge: int = 60,
    config: AnomalyConfig | None = None,
) -> list[tuple[int, AnomalyRule]]:
    """Spoil a few of ``docs`` (one series, as ``demo_series`` made it) in place.

    Planted, as far as the longest clean stretch allows: a spike, every exact rule
    but TIME_IN_FUTURE (a misaligned copy is added, so no slot goes missing) and a
    frozen run one candle past ``frozen_min_run``. Candles at ``protected`` open
    times (the children of stored higher candles), duplicated or next to a gap, and
    the newest ``away_from_edge`` slots are left alone. Returns (open time, rule),
    sorted by time.
    """
    tf = parse_timeframe(timeframe)
    run_len = (config or AnomalyConfig()).frozen_min_run + 1
    times = [_ms(d) for d in docs]
    counts = Counter(times)
    edge = tf.shift(max(times, default=0), -away_from_edge)
    guarded = set(protected)

    def usable(i: int) -> bool:
        t = times[i]
        after_gap = i > 0 and times[i - 1] != tf.shift(t, -1)
        return counts[t] == 1 and t < edge and t not in guarded and not after_gap

    # The longest stretch of consecutive usable candles.
    length, first, start = 0, 0, 0
    for i in range(len(docs) + 1):
        if i == len(docs) or not usable(i):
            length, first = max((length, first), (i - start, start))
            start = i + 1
    end = first + length
    planted: list[tuple[int, AnomalyRule]] = []
    i = first + 30  # the spike rule needs 20 moves of history first
    if i + 2 < end:
        docs[i] = docs[i] | {"high": docs[i]["high"] * 3}
        planted.append((times[i], R.PRICE_SPIKE))
        i += 3
    for rule in (R.PRICE_INVALID, R.HIGH_BELOW_BODY, R.LOW_ABOVE_BODY, R.VOLUME_INVALID):
        if i + 2 >= end:
            break
        d = docs[i]
        top, bottom = max(d["open"], d["close"]), min(d["open"], d["close"])
        change = {
            R.PRICE_INVALID: {"close": 0.0},
            R.HIGH_BELOW_BODY: {"high": (top + bottom) / 2},
            R.LOW_ABOVE_BODY: {"low": (top + bottom) / 2},
            R.VOLUME_INVALID: {"volume": -d["volume"]},
        }[rule]
        docs[i] = d | change
        planted.append((times[i], rule))
        i += 2
    if i + 2 < end:
        misaligned = times[i] + (tf.next_open(times[i]) - times[i]) // 3
        docs.append(docs[i] | {"timestamp": _dt(misaligned)})
        planted.append((misaligned, R.TIME_MISALIGNED))
        i += 2
    if i + run_len + 1 < end:
        original = docs[i]  # the writer repeats this one: it is not itself a finding
        for j in range(i + 1, i + 1 + run_len):
            docs[j] = original | {"timestamp": docs[j]["timestamp"]}
            planted.append((times[j], R.FROZEN_FEED))
    docs.sort(key=_ms)
    return sorted(planted, key=lambda p: p[0])


def children_of(higher: list[dict[str, Any]], timeframe: str, child: str) -> set[int]:
    """The open times of every ``child`` slot inside a stored ``higher`` candle."""
    htf, ctf = parse_timeframe(timeframe), parse_timeframe(child)
    return {o for d in higher for o in ctf.iter_opens(_ms(d), htf.next_open(_ms(d)))}


def plant_mismatch(
    higher: list[dict[str, Any]],
    timeframe: str,
    children: list[dict[str, Any]],
    child: str,
    spoiled: Collection[int] = (),
    protected: Collection[int] = (),
) -> list[tuple[int, AnomalyRule]]:
    """Scale by 1.1 the volume of the newest ``higher`` candle whose ``child`` candles
    are each stored once and none ``spoiled``, and that is not ``protected`` (a child
    of a stored candle of a yet higher timeframe); returns its (open time, rule), if any."""
    htf, ctf = parse_timeframe(timeframe), parse_timeframe(child)
    once = {t for t, n in Counter(_ms(c) for c in children).items() if n == 1} - set(spoiled)
    for k in range(len(higher) - 1, -1, -1):
        t = _ms(higher[k])
        if t not in protected and all(o in once for o in ctf.iter_opens(t, htf.next_open(t))):
            higher[k] = higher[k] | {"volume": higher[k]["volume"] * 1.1}
            return [(t, R.AGGREGATE_MISMATCH)]
    return []


def plant_demo_anomalies(
    series: dict[str, list[dict[str, Any]]],
) -> dict[str, list[tuple[int, AnomalyRule]]]:
    """Plant bad candles into one symbol's series (timeframe -> docs, changed in place).

    Each timeframe's series gets :func:`plant_anomalies`, sparing the children of
    the stored candles of every timeframe it is the aggregate child of; each
    timeframe with a configured child gets one :func:`plant_mismatch`. Returns the
    planted (open time, rule) per timeframe.
    """
    tfs = {name: parse_timeframe(name) for name in series}
    child = {h: child_timeframe(tfs[h], tfs.values()) for h in series}
    planted: dict[str, list[tuple[int, AnomalyRule]]] = {}
    guarded: dict[str, set[int]] = {name: set() for name in series}
    for h, c in child.items():
        if c is not None:
            guarded[c.name] |= children_of(series[h], h, c.name)
    for name in sorted(series, key=lambda n: tfs[n].nominal_ms):
        planted[name] = plant_anomalies(series[name], name, guarded[name])
    for h, c in child.items():
        if c is not None:
            spoiled = {t for t, _ in planted[c.name]}
            planted[h] += plant_mismatch(series[h], h, series[c.name], c.name, spoiled, guarded[h])
    return planted
