"""`GET /api/live`: server-sent events, one `data: {json}` a second, for as long as the
client stays. The answer streams through the Downstream contract (a chunked body of
unknown length); the stream is the answer's producer, so the connection tells it when
the client leaves, and a client that does not read (its buffer is full) skips seconds
instead of piling them up."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bastion.http.request import BODY_CHUNKED
from bastion.http.status import status_line

if TYPE_CHECKING:
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request

log = logging.getLogger("bastion.admin")

EVERY = 1.0


class LiveStream:
    def __init__(
        self,
        client: Downstream,
        req: Request,
        next_event: Callable[[], Awaitable[dict[str, Any] | None]],
        on_end: Callable[[LiveStream], None],
    ) -> None:
        self.client = client
        self.req = req
        self.next_event = next_event
        self.on_end = on_end
        self.task: asyncio.Task[None] | None = None
        self.gone = False

    def start(self) -> None:
        client, req = self.client, self.req
        head = b"".join(
            (
                status_line(200),
                client.date_header,
                b"Content-Type: text/event-stream\r\n",
                b"X-Accel-Buffering: no\r\n",
            )
        )
        client.write_head(req, head, BODY_CHUNKED)
        client.set_producer(self)
        client.write_body(b"retry: 2000\n\n")
        self.task = client.loop.create_task(self._run())

    async def _run(self) -> None:
        client = self.client
        try:
            while client.open and not self.gone:
                if not client.write_paused:
                    try:
                        event = await self.next_event()
                    except (sqlite3.Error, OSError) as exc:  # a locked or damaged file
                        log.warning("admin: cannot read the live figures (%s); stream ended", exc)
                        break
                    except Exception:
                        log.exception("admin: the live figures failed; the stream ends")
                        break
                    if self.gone or not client.open:
                        break  # the client left while the figures were read
                    if event is None:
                        break  # the statistics went away (a reload turned them off)
                    data = json.dumps(event, separators=(",", ":")).encode()
                    client.write_body(b"data: " + data + b"\n\n")
                await asyncio.sleep(EVERY)
        finally:
            self.on_end(self)
            if not self.gone and client.producer is self:
                client.set_producer(None)
                client.close_after_response()  # a stream that ends ends its connection
                client.end_response()

    def end(self) -> None:
        """Stop streaming (the listener closes): the answer ends cleanly."""
        if self.task is not None:
            self.task.cancel()

    # Producer: the client's buffer and departure
    def pause_producing(self) -> None:
        pass  # `write_paused` is read before each event

    def resume_producing(self) -> None:
        pass

    def client_gone(self) -> None:
        self.gone = True
        if self.task is not None:
            self.task.cancel()
