"""A small embedded HTTP server on loopback, so that ``asyncpool bench`` works with nothing
else running: HTTP/1.1 with keep-alive (h11) or HTTP/2 over cleartext with prior knowledge (h2).

Every request gets ``200`` and a short body (``/bytes/N`` gives N bytes). It is a load target,
not a general server: it reads and discards request bodies and never misbehaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import h11

__all__ = ["serve"]

BODY = b"hello from asyncpool\n"


def _body_for(target: bytes) -> bytes:
    if target.startswith(b"/bytes/") and target[7:].isdigit():
        return b"x" * min(int(target[7:]), 64 << 20)
    return BODY


async def _serve_http1(stream: anyio.abc.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive(65536))
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return
                continue
            if isinstance(event, h11.Request):
                body = _body_for(event.target)
                headers = [("content-length", str(len(body))), ("content-type", "text/plain")]
                data = conn.send(h11.Response(status_code=200, headers=headers))
                await stream.send((data or b"") + (conn.send(h11.Data(data=body)) or b""))
            elif isinstance(event, h11.EndOfMessage):
                await stream.send(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return


async def _serve_http2(stream: anyio.abc.SocketStream) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    async with stream:
        await stream.send(conn.data_to_send())
        while True:
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers).get(b":path", b"/")
                    body = _body_for(path)
                    conn.send_headers(
                        event.stream_id,
                        [(":status", "200"), ("content-length", str(len(body)))],
                    )
                    # Small bodies fit the default window; large ones are cut to it.
                    window = conn.local_flow_control_window(event.stream_id)
                    conn.send_data(event.stream_id, body[:window], end_stream=True)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
            await stream.send(conn.data_to_send())


@contextlib.asynccontextmanager
async def serve(*, http2: bool = False) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 (a free port) for the block; yields the base URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    handler = _serve_http2 if http2 else _serve_http1
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()
