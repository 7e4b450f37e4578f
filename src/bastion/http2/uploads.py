"""The streams of one HTTP/2 connection that are forwarded while their request body
still arrives: each holds an upstream connection at the client's pace.

At most `http2.max_uploads` of them are forwarded at once; further streams with an
incomplete body wait in order (their bodies held within their own flow-control
windows) until one of those bodies completes or its stream ends. A stream whose body
is complete never waits. Each forwarded upload also has its own body timer: the
longest gap between two DATA frames (`timeouts.body`), checked on the connection's
once-a-second tick.

The bytes waiting streams hold are credited back to the connection window, so the
uploads under way are not starved by streams the gateway itself holds back. Those
credited bytes are bounded per connection by `budget` (one connection window): a
waiting stream whose DATA would take them past it is refused (REFUSED_STREAM, its body
dropped) rather than the connection window being left to close. Closing it instead would
bound memory too, but a client writing to every stream at once would then fill the
whole window with held-back bytes and the running uploads could never finish.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from bastion.http2.stream import Stream


class Uploads:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        budget: int,
        body_timeout: float,
        dispatch: Callable[[Stream], None],
    ) -> None:
        self.loop = loop
        self.limit = limit
        self.budget = budget  # request body bytes waiting streams may hold, in all
        self.held = 0  # what they hold now (each stream's share in Stream.held)
        self.body_timeout = body_timeout
        self.dispatch = dispatch
        self.count = 0  # forwarded streams whose body is still arriving
        self.waiting: deque[Stream] = deque()
        self.scheduled = False
        self.closed = False

    def start(self, stream: Stream, now: float) -> None:
        """A new stream: dispatched now, or held back while the cap is reached."""
        if stream.req.body_done or stream.reject is not None:
            self.dispatch(stream)
        elif self.waiting or self.count >= self.limit:
            stream.waiting = True
            self.waiting.append(stream)
        else:
            self._forward(stream, now)

    def hold(self, stream: Stream, size: int) -> bool:
        """Count `size` more body bytes held by the waiting `stream`: False, and nothing
        counted, if that would take the waiting streams past the budget."""
        if self.held + size > self.budget:
            return False
        self.held += size
        stream.held += size
        return True

    def release(self, stream: Stream) -> None:
        """`stream` no longer waits (dispatched, refused or gone): its bytes are its own."""
        self.held -= stream.held
        stream.held = 0

    def _forward(self, stream: Stream, now: float) -> None:
        self.count += 1
        stream.uploading = True
        stream.body_at = now
        self.dispatch(stream)

    def admit(self) -> None:
        """Dispatch the waiting streams that may go now, in order."""
        self.scheduled = False
        waiting = self.waiting
        now = self.loop.time()
        for _ in range(len(waiting)):
            stream = waiting.popleft()
            if stream.closed or stream.answered or self.closed:
                self.release(stream)
                continue
            if stream.req.body_done:
                stream.waiting = False
                self.release(stream)
                self.dispatch(stream)
            elif self.count < self.limit:
                stream.waiting = False
                self.release(stream)
                self._forward(stream, now)
            else:
                waiting.append(stream)

    def done(self, stream: Stream) -> None:
        """`stream` no longer holds a slot (its body is complete, or it ended)."""
        stream.uploading = False
        stream.body_at = 0.0
        self.count -= 1
        if self.waiting and not self.scheduled and not self.closed:
            self.scheduled = True
            self.loop.call_soon(self.admit)

    def expire(self, now: float, streams: list[Stream]) -> None:
        """The body timer: forwarded uploads silent for longer than timeouts.body (not
        counting the time the gateway held them back) get 408 or a reset."""
        late = now - self.body_timeout
        for stream in streams:
            if 0.0 < stream.body_at < late and not stream.read_paused and not stream.req.body_done:
                stream.body_timed_out()
