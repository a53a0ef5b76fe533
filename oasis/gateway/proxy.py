"""The forwarding itself: a generic gRPC handler for every Spark Connect RPC (methods.METHODS) that takes the
call's route (routes.Router), swaps the caller's oasis token for the cluster server's own, and relays requests
and responses as bytes over one pooled channel per cluster server. The server's status, details and trailing
metadata (Spark's error classes, `grpc-status-details-bin`) reach the client unchanged, and a client that goes
away cancels the upstream call."""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable

import grpc

from oasis.gateway.methods import METHODS, SERVICE, Kind, path
from oasis.gateway.routes import AUTHORIZATION, CLUSTER, Refused, Route, Router
from oasis.gateway.starting import START_WAIT, wait_started
from oasis.remote.base import RemoteError

log = logging.getLogger(__name__)

# Spark Connect's own limits apply at the server (spark.connect.grpc.maxInboundMessageSize); the gateway adds
# none of its own: -1 is gRPC's "unlimited".
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                   ("grpc.keepalive_time_ms", 30_000), ("grpc.http2.max_pings_without_data", 0),
                   ("grpc.keepalive_permit_without_calls", 1)]
DROPPED = (AUTHORIZATION, CLUSTER, "user-agent")


def upstream_metadata(metadata: Any, route: Route) -> list[tuple[str, str | bytes]]:
    """The caller's metadata less its oasis token, the cluster header and gRPC's own, plus the server's token."""
    out: list[tuple[str, str | bytes]] = [
        (k, v) for k, v in metadata
        if k.lower() not in DROPPED and not k.startswith(":") and not k.lower().startswith("grpc-")]
    out.append((AUTHORIZATION, f"Bearer {route.token}"))
    return out


class Upstreams:
    """One channel per cluster server endpoint (as the cluster's Remote reaches it); a cluster whose endpoint
    moved (a restart on other ports, a new SSH connection) gets a new one, and the old one is closed."""

    def __init__(self) -> None:
        self._channels: dict[str, tuple[tuple[str, int], grpc.aio.Channel]] = {}

    async def channel(self, route: Route) -> grpc.aio.Channel:
        host, port = await route.remote.tunnel(route.address, route.port)
        have = self._channels.get(route.cluster_id)
        if have is not None and have[0] == (host, port):
            return have[1]
        channel = grpc.aio.insecure_channel(f"{host}:{port}", options=CHANNEL_OPTIONS)
        self._channels[route.cluster_id] = ((host, port), channel)
        if have is not None:
            await have[1].close(grace=30)
        return channel

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class Gateway:
    def __init__(self, router: Router, upstreams: Upstreams | None = None,
                 notify: Callable[[], None] = lambda: None) -> None:
        """`notify` wakes an engine of this process when the gateway asks for work (a server's start)."""
        self.router, self.upstreams, self.notify = router, upstreams or Upstreams(), notify

    def handler(self) -> grpc.GenericRpcHandler:
        made = {Kind.UNARY: self._unary_handler, Kind.SERVER_STREAM: self._server_stream_handler,
                Kind.CLIENT_STREAM: self._client_stream_handler}
        return grpc.method_handlers_generic_handler(SERVICE, {m: made[k](m) for m, k in METHODS.items()})

    async def _open(self, context: grpc.aio.ServicerContext) -> tuple[Route, grpc.aio.Channel, list]:
        metadata = context.invocation_metadata() or ()
        try:
            route = await self.router.route(metadata)
            if route.starts:  # the session's first calls wait for the server (and a restarted gateway's, again)
                await wait_started(self.router.db, route.cluster_id, context.time_remaining() or START_WAIT,
                                   self.notify)
            channel = await self.upstreams.channel(route)
        except Refused as e:
            await context.abort(e.code, e.message)
            raise  # not reached: abort raises
        except RemoteError as e:  # the cluster's host cannot be reached (its site cut off): the client may retry
            log.warning("spark connect: cannot reach a cluster's server: %s", e)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the cluster's Spark Connect server cannot be reached")
            raise
        return route, channel, upstream_metadata(metadata, route)

    @staticmethod
    async def _relay_error(context: grpc.aio.ServicerContext, e: grpc.aio.AioRpcError) -> None:
        trailing = tuple(e.trailing_metadata() or ())
        # set first: gRPC falls back on the context's own trailing metadata when abort gets none, and that must
        # be a tuple too
        context.set_trailing_metadata(trailing)
        await context.abort(e.code(), e.details() or "", trailing)

    async def _one_response(self, method: str, request: Any, context: grpc.aio.ServicerContext,
                            streamed: bool) -> bytes:
        """Forward a call with one response (its request one message, or a stream when `streamed`)."""
        _, channel, metadata = await self._open(context)
        open_call = channel.stream_unary if streamed else channel.unary_unary
        call = open_call(path(method))(request, metadata=metadata, timeout=context.time_remaining())
        try:
            response = await call
        except grpc.aio.AioRpcError as e:
            await self._relay_error(context, e)
            raise
        context.set_trailing_metadata(tuple(await call.trailing_metadata() or ()))
        return response

    def _unary_handler(self, method: str) -> grpc.RpcMethodHandler:
        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._one_response(method, request, context, streamed=False)

        return grpc.unary_unary_rpc_method_handler(unary)

    def _server_stream_handler(self, method: str) -> grpc.RpcMethodHandler:
        async def server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            _, channel, metadata = await self._open(context)
            call = channel.unary_stream(path(method))(request, metadata=metadata, timeout=context.time_remaining())
            try:
                async for response in call:
                    yield response
                context.set_trailing_metadata(tuple(await call.trailing_metadata() or ()))
            except grpc.aio.AioRpcError as e:
                await self._relay_error(context, e)
            finally:
                call.cancel()  # the client went away: so does the server's call (a no-op once it ended)

        return grpc.unary_stream_rpc_method_handler(server_stream)

    def _client_stream_handler(self, method: str) -> grpc.RpcMethodHandler:
        async def client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            return await self._one_response(method, requests, context, streamed=True)

        return grpc.stream_unary_rpc_method_handler(client_stream)
