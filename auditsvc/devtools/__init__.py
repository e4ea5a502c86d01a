"""Tools outside the serving path.

The ``make run`` / ``make cluster`` dev runner, demo candles with known gaps and
duplicates, the demo feed that keeps them live, the one-shot database
commands (setup-db, restore-duplicates, seed-demo), and the seeded market-like
candle generator with its fault injection, for the tests and the bench. It may import
``auditsvc.transport``, ``auditsvc.usecases``, ``auditsvc.leadership``,
``auditsvc.storage``, ``auditsvc.storage.mongo``, ``auditsvc.ops``,
``auditsvc.domain``, the standard library and third-party packages.
``tests/test_layers.py`` enforces this.
"""
