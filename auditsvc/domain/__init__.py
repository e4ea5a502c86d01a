"""The pure audit domain: the rules, and the records they produce.

Timeframes and slot arithmetic, the one-pass series scanner (gaps, duplicate slots,
counts), which document of a duplicate group survives, health scoring, the candle
content rules (exact, spike, frozen feed, cross-timeframe aggregates) and the validity
score, the frozen value types and service records, and the domain errors. Nothing
here does I/O. Times are integer milliseconds since the Unix epoch, UTC, so that the
hot loop over candle timestamps does no datetime arithmetic. It may import only the
standard library: no grpc, no pymongo, no other auditsvc package.
``tests/test_layers.py`` enforces this.
"""
