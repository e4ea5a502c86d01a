"""The pure audit domain: timeframes, gaps, duplicates and health scores.

Nothing in this package does I/O or imports from the rest of auditsvc, grpc or
pymongo. Times are integer milliseconds since the Unix epoch, UTC, so that the hot
loop over candle timestamps does no datetime arithmetic.
"""
