"""grpc.health.v1 Check and Watch, with a shutdown that ends every Watch.

grpc's bundled servicer never ends its Watch streams, so a client holding one
(a load balancer, a probe sidecar) would make every shutdown wait out the whole
grace period and then see UNAVAILABLE. ``close`` reports NOT_SERVING for every
service and then ends each Watch with OK.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditsvc.transport.status_table import unknown_service

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._status: dict[str, int] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._closed = False

    async def set(self, service: str, status: int) -> None:
        async with self._changed:
            if not self._closed:
                self._status[service] = status
                self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        status = self._status.get(request.service)
        if status is None:
            await unknown_service("unknown service").abort(context)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        sent = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                closed = self._closed
                if status == sent and not closed:
                    await self._changed.wait()
                    continue
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if closed:
                return
