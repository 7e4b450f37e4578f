"""HTTP/1.1 answers: what a handler calls to send its response (the `Downstream`
methods respond / problem / write_head / write_body / end_response, corking and
tunnels), and what follows a response: the next pipelined request, or closing."""

from __future__ import annotations

from typing import Final

from bastion.http.downstream import Tunnel
from bastion.http.joining import join_bytes
from bastion.http.request import BODY_FIXED, BODY_LENGTH, BODY_NONE, BodySink, Request
from bastion.http.status import fixed_head
from bastion.http1.closing import Closing
from bastion.http1.state import BUFFER, QUEUE, T_HEAD, T_IDLE

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_join_bytes: Final = join_bytes  # a C static (http1/head.py says why)


class ResponseWriter(Closing):  # one chain of parts: see http1/state.py
    """The answer side of `HTTP1Connection`."""

    # ------------------------------------------------------------ request body
    def take_body(self, req: Request, sink: BodySink) -> list[bytes]:
        """Install `sink` for the rest of the body; returns what was buffered so far."""
        buffered = req.body_buffer or []
        req.body_buffer = None
        req.sink = sink
        self._resume(BUFFER)
        return buffered

    def send_continue(self, req: Request) -> None:
        if req.expect_continue and not req.body_done and self.transport is not None:
            req.expect_continue = False
            self._write(_CONTINUE)

    # ----------------------------------------------------------------- output
    def respond(
        self,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: bytes = b"",
    ) -> None:
        """A complete response with a known body (errors, redirects, small files)."""
        if self.transport is None or self.closing:
            return
        if not req.body_done and (req.expect_continue or req.has_body):
            # answered before the body arrived (a redirect, a refusal): the connection is
            # closed after this answer (end_response), so the answer says so, or a client
            # would send its next request on a connection about to close
            self.resp_keep_alive = False
        self.resp_started = True
        req.status = status
        fields = fixed_head(status, self.ctx.date_header, body, content_type, headers)
        if req.on_head is not None:
            fields = req.on_head(req, fields, BODY_FIXED)[0]
        head = b"".join(
            (
                fields,
                req.extra_head,
                b"X-Request-ID: " + req.request_id.encode("latin-1") + b"\r\n",
                b"" if self.resp_keep_alive else b"Connection: close\r\n",
                b"\r\n",
            )
        )
        if req.method == "HEAD" or status in (204, 304):
            body = b""
        self._write(head + body)
        req.bytes_out += len(head) + len(body)
        self.end_response()

    def write_head(self, req: Request, head: bytes, framing: int) -> None:
        """Send a response head built by a handler: `head` is the status line and
        header fields (without the framing fields below), `framing` says whether the
        body has a Content-Length (already in `head`), no body, or an unknown length."""
        if self.transport is None or self.closing:
            return
        self.resp_started = True
        if req.expect_continue and not req.body_done:
            self.resp_keep_alive = False
        if req.on_head is not None:
            head, framing = req.on_head(req, head, framing)
        tail: list[bytes] = [
            head,
            req.extra_head,
            b"X-Request-ID: ",
            req.request_id.encode("latin-1"),
            b"\r\n",
        ]
        if framing != BODY_NONE and framing != BODY_LENGTH:
            if req.version == "1.1":
                self.resp_chunked = True
                tail.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.resp_keep_alive = False
        if not self.resp_keep_alive:
            tail.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            tail.append(b"Connection: keep-alive\r\n")
        tail.append(b"\r\n")
        data = _join_bytes(tail)
        req.bytes_out += len(data)
        if self.corked is not None:
            self.corked.append(data)
        else:
            self.transport.write(data)

    def write_body(self, data: bytes) -> None:
        active = self.active
        if active is not None and active.body_filter is not None:
            data = active.body_filter.feed(data)
        self._write_body(data)

    def _write_body(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or not data:
            return
        corked = self.corked
        if self.resp_chunked:
            if corked is not None:
                corked += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        elif corked is not None:
            corked.append(data)
        else:
            transport.write(data)
        if self.active is not None:
            self.active.bytes_out += len(data)

    def end_response(self) -> None:
        req = self.active
        if req is None:
            return
        if req.body_filter is not None:
            body_filter = req.body_filter
            req.body_filter = None
            self._write_body(body_filter.finish())
        transport = self.transport
        if self.resp_chunked and transport is not None:
            if self.corked is not None:
                self.corked.append(b"0\r\n\r\n")
            else:
                transport.write(b"0\r\n\r\n")
        self.resp_chunked = False
        self.producer = None
        self.active = None
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        self.ctx.finish(req)
        if transport is None or self.closing:
            return
        if self.reject is not None and not self.queue:
            self._send_reject()
            return
        if not req.body_done:
            # Answered before the body arrived (413, 404, …): nothing more can be
            # read on this connection; send FIN and drain briefly so the client
            # sees the answer instead of a reset.
            self._linger_close()
            return
        if not self.resp_keep_alive or self.upgraded or self.ctx.draining or self.client_eof:
            self.uncork()  # what is queued leaves before the FIN
            self.closing = True
            transport.close()
            return
        if self.queue:
            self._dispatch_next()
            if len(self.queue) <= 1:
                self._resume(QUEUE)
            return
        self._resume(QUEUE)
        if self.in_head:
            # part of the next request's head came during this response: from now on
            # it has the usual time to complete
            self._set_timer(T_HEAD, self.header_timeout)
        else:
            self._set_timer(T_IDLE, self.idle_timeout)

    def _write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def cork(self) -> None:
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked = self.corked
        self.corked = None
        if corked and self.transport is not None and not self.closing:
            self.transport.write(_join_bytes(corked))

    def abort(self) -> None:
        """Drop the connection at once (a response was cut short upstream)."""
        self.corked = None
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def start_tunnel(self, tunnel: Tunnel, head: bytes = b"", rest: bytes = b"") -> None:
        """Send the `101` head and the first upstream bytes, then hand the connection
        over to an Upgrade tunnel (WebSocket and friends)."""
        req = self.active
        if self.transport is None:
            return
        if head:
            self.transport.write(head)
            if req is not None:
                req.bytes_out += len(head)
        if rest:
            self.transport.write(rest)
        self.tunnel = tunnel
        self._clear_timer()
        self._resume(BUFFER | QUEUE)
        if req is not None and req.upgrade_data:
            tunnel.from_client(req.upgrade_data)
            req.upgrade_data = b""

    def tunnel_write(self, data: bytes) -> None:
        """Bytes from the far end of a tunnel to the client."""
        if self.transport is not None:
            self.transport.write(data)
