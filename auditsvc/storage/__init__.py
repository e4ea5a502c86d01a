"""The store interfaces the use cases depend on, and their MongoDB implementation.

``auditsvc.storage.interfaces`` holds the Protocols; the ``mongo`` subpackage implements
them. Only ``auditsvc.app`` and the devtools choose the implementation; every other
layer sees the Protocols. It may import ``auditsvc.ops``, ``auditsvc.domain``, the
standard library and third-party packages. ``tests/test_layers.py`` enforces this.
"""
