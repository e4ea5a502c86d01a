"""Operational plumbing that every layer may use.

Settings from the environment, JSON-lines logging, Prometheus metrics on an injected
registry, test-only failpoints and the injected clock. Nothing here is a module-level
global. It may import ``auditsvc.domain``, the standard library and third-party
packages. ``tests/test_layers.py`` enforces this.
"""
