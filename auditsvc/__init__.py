"""auditsvc: a gRPC audit control-plane for OHLCV candles in MongoDB."""

__version__ = "0.1.0"
