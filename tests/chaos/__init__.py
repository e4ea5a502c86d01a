"""Fault injection against a real three-replica cluster and SecantusDB.

``chaos.run_chaos`` is the bounded chaos run (``python -m tests.chaos``, and a
small version in ``test_chaos.py``); ``load`` is the sustained-load run
(``python -m tests.chaos.load``), which is not part of ``make test``.
"""
