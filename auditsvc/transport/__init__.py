"""The gRPC edge: decode, call a use case, encode.

The thin servicer, the grpc.aio server, the outermost interceptor, bearer-token auth,
the grpc.health.v1 service, proto <-> domain conversion, the forwarding of a
follower's mutating calls to the leader, and the one table from domain errors to
status codes. Business rules live in the use cases, not here. It may import
``auditsvc.usecases``, ``auditsvc.leadership``, ``auditsvc.ops``, ``auditsvc.domain``,
the standard library and third-party packages. ``tests/test_layers.py`` enforces this.
"""
