"""Tools outside the serving path.

The ``make run`` / ``make cluster`` dev runner, demo candles with known gaps and
duplicates, the demo feed that keeps them live, and the one-shot database
commands (setup-db, restore-duplicates, seed-demo). It may import
``auditsvc.transport``, ``auditsvc.usecases``, ``auditsvc.leadership``,
``auditsvc.storage``, ``auditsvc.storage.mongo``, ``auditsvc.ops``,
``auditsvc.domain``, the standard library and third-party packages.
``tests/test_layers.py`` enforces this.
"""
