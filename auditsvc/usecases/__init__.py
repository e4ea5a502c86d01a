"""The use cases behind the RPCs and the scheduler.

``AuditService`` (the entry point the servicer calls: validation, idempotency, status,
streams), the ``Auditor`` that runs audit cycles, the ``Deduplicator`` behind
ResolveDuplicates, the leader-only scheduler and the ListGaps page tokens. They take and
return domain records and raise domain errors; stores, clock, settings and metrics are
injected by ``auditsvc.app``, so only the store interfaces are imported here, never
``auditsvc.storage.mongo``. It may import ``auditsvc.leadership``, ``auditsvc.storage``,
``auditsvc.ops``, ``auditsvc.domain``, the standard library and third-party packages.
``tests/test_layers.py`` enforces this.
"""
