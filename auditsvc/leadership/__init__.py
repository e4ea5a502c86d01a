"""Who leads, and what a follower does about it.

``Term`` and the ``Leadership`` protocol (with ``Standalone``), the ``LeaderElector``
that holds a MongoDB lease through the lease store interface, and the forwarding of
mutating calls from a follower to the leader. It may import ``auditsvc.storage``,
``auditsvc.ops``, ``auditsvc.domain``, the standard library and third-party packages.
``tests/test_layers.py`` enforces this.
"""
