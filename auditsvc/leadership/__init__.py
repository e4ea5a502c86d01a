"""Who leads, and for which term.

``Term`` and the ``Leadership`` protocol (with ``Standalone``), and the ``LeaderElector``
that holds a MongoDB lease through the leadership store interface, with its
renew-deadline watchdog and its follower observation in units of their own. Forwarding a
follower's mutating calls to the leader is a gRPC concern and lives in
``auditsvc.transport``. It may import ``auditsvc.storage``,
``auditsvc.ops``, ``auditsvc.domain``, the standard library and third-party packages.
``tests/test_layers.py`` enforces this.
"""
