"""The load generator's gRPC mode: the SPIFFE Workload API's unary ``FetchJWTSVID`` over a Unix socket.

Each of the N workers has its own channel (``grpc.use_local_subchannel_pool``: its own HTTP/2 connection) with one
call in flight, like the HTTP mode's N keep-alive connections. Every call carries the metadata
``workload.spiffe.io: true`` that the Workload API requires and asks for one audience. The request is serialised
once; the response is taken as bytes (not parsed), as the HTTP mode reads a body without parsing it. A call that
ends with a gRPC status other than OK counts with that status code + 1000 (so it is not taken for a 200).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]

from broker.identity.workloadapi.pb import workload_pb2

__all__ = ["grpc_senders"]

METHOD = "/SpiffeWorkloadAPI/FetchJWTSVID"
METADATA = (("workload.spiffe.io", "true"),)
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]

Send = Callable[[], Awaitable[tuple[int, int]]]


def _identity(data: bytes) -> bytes:
    return data


async def grpc_senders(
    socket_path: str, audience: str, concurrency: int
) -> tuple[list[Send], Callable[[], Awaitable[None]]]:
    """One sender per channel, and how to close them all."""
    request = workload_pb2.JWTSVIDRequest(audience=[audience]).SerializeToString()
    channels = [grpc.aio.insecure_channel(f"unix://{socket_path}", options=CHANNEL_OPTIONS) for _ in range(concurrency)]

    def sender(channel: grpc.aio.Channel) -> Send:
        call = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)

        async def send() -> tuple[int, int]:
            try:
                response: bytes = await call(request, metadata=METADATA, timeout=10)
            except grpc.aio.AioRpcError as error:
                return 1000 + int(error.code().value[0]), 0
            return 200, len(response)

        return send

    for channel in channels:
        await channel.channel_ready()

    async def close() -> None:
        for channel in channels:
            await channel.close()

    return [sender(channel) for channel in channels], close
