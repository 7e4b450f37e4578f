"""The tunnel an exchange becomes after a `101 Switching Protocols` (WebSocket and other
Upgrade protocols): bytes relayed both ways as they come, until either side closes or
the tunnel stays idle past `websocket_idle_timeout`.

The client's side is its HTTP/1.1 connection, reached only through the `Downstream`
contract (`start_tunnel`, `tunnel_write`); the upstream's is the exchange's connection,
which hands its bytes to `from_upstream` once `tunnelling` is set.
"""

from __future__ import annotations

from bastion.proxy.base import ExchangeBase


class TunnelEnd(ExchangeBase):
    def on_upgraded(self, rest: bytes) -> None:
        """The upstream switched protocols; `rest` is what it sent after the 101 head."""
        client = self.client
        self.tunnelling = True
        self.resp_started = True
        conn = self.upstream
        if not client.open or conn is None:
            return
        conn.deadline = 0.0  # tunnels have their own idle rule, below
        conn.tunnel_idle = self.handler.websocket_idle_timeout
        client.start_tunnel(self, self.head + b"\r\n", rest)
        if conn.tunnel_idle:
            conn.arm(self.loop.time() + conn.tunnel_idle)

    def from_client(self, data: bytes) -> None:
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            if conn.tunnel_idle:
                conn.deadline = self.loop.time() + conn.tunnel_idle

    def from_upstream(self, data: bytes) -> None:
        # (once the client has gone, `peer_closed` has closed the upstream connection:
        # nothing comes here any more)
        self.client.tunnel_write(data)
        self.req.bytes_out += len(data)
        conn = self.upstream
        if conn is not None and conn.tunnel_idle:
            conn.deadline = self.loop.time() + conn.tunnel_idle

    def peer_closed(self) -> None:
        """The client side of a tunnel closed."""
        self.done = True
        self._release()
        self._cancel_timer()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.close()

    def _tunnel_lost(self) -> None:
        """The upstream side of the tunnel closed: so does the client's."""
        self.done = True
        self._release()
        self._cancel_timer()
        self._close_client()

    def _tunnel_idle(self) -> None:
        """Nothing went either way for `websocket_idle_timeout`."""
        self.peer_closed()
        self._close_client()

    def _close_client(self) -> None:
        """Close the client's connection once what it was sent has left (not a reset:
        the upstream's last bytes, a WebSocket close frame, still reach the client)."""
        if self.recorder is not None:
            # (the client connection's end told the exchange through `client_gone`
            # while it was still the connection's producer; ending the response
            # below clears that)
            self.recorder.on_abort()
        client = self.client
        client.close_after_response()
        client.end_response()
