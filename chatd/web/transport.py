"""The web listener's transport: HTTP/1.1 (h11) until ``/ws`` upgrades, then WebSocket.

It wraps the transport that holds the socket (plain, or TLS for HTTPS) and
follows the rules of :mod:`chatd.transport`. A connection of the web listener
is a chat connection from its accept on: before an upgrade the core simply
hears nothing from it, the transport answers the HTTP requests itself (its
own bytes, ``wants_write``) and drops whatever the core sends (a ``timeout``
after ``handshake_timeout`` then closes an idle HTTP connection, and a
shutdown's ``bye`` closes it too). After the upgrade the stream is translated
by :class:`~chatd.web.websocket.WebSocket`.

Output is bounded: a pipelined request is answered only once the previous
answer is out, and core bytes are taken only while the transport's own bytes
are all sent, so the core's ``max_outbuf`` check still sees the backlog.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import h11

from chatd.transport import Chunk, Transport
from chatd.web.http import Answer, Site
from chatd.web.websocket import FrameLimit, WebSocket

#: Longest request head (request line and headers) read before answering 431.
MAX_REQUEST_HEAD = 16 * 1024


class WebTransport:
    """HTTP then WebSocket over ``inner`` (see the module's rules)."""

    __slots__ = ("closing", "http", "inner", "limit", "out", "shut", "site", "ws")

    def __init__(self, inner: Transport, site: Site, limit: FrameLimit) -> None:
        self.inner = inner
        self.site = site
        self.limit = limit
        self.http: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self.ws: WebSocket | None = None
        self.out = bytearray()  # our own bytes: HTTP answers, WebSocket frames
        self.closing = False  # shut our sending side once ``out`` is sent
        self.shut = False

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def handshaking(self) -> bool:
        """A TLS handshake underneath still runs (the loop's TLS timeout asks)."""
        return bool(getattr(self.inner, "handshaking", False))

    @property
    def wants_write(self) -> bool:
        return bool(self.out) or self.inner.wants_write

    def recv(self, buf: memoryview) -> Chunk | None:
        data = self.inner.recv(buf)
        if data is None:
            return None
        if not data:
            return b""
        if self.ws is not None:
            frames = self.ws.feed(bytes(data))
            if self.ws.closed:
                self.closing = True
                return frames or None
            return frames
        if self.http is None or self.closing:
            return b""
        self.http.receive_data(bytes(data))
        return self._serve()

    def _serve(self) -> bytes:
        """Answer the next request(s) until an answer waits to go out; after an
        accepted upgrade, the WebSocket's first frames."""
        http = self.http
        while http is not None and not self.out and not self.closing:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint)
                break
            if event is h11.PAUSED and http.our_state is http.their_state is h11.DONE:
                http.start_next_cycle()
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                break
            elif isinstance(event, h11.Request):
                answer = self.site.answer(event)
                self._respond(answer)
                if answer.upgrade:
                    return self._switch()
        return b""

    def _respond(self, answer: Answer) -> None:
        http = self.http
        assert http is not None
        self.out += http.send(answer.response) or b""
        if isinstance(answer.response, h11.Response):
            if answer.body:
                self.out += http.send(h11.Data(data=answer.body)) or b""
            self.out += http.send(h11.EndOfMessage()) or b""
            if http.our_state is h11.MUST_CLOSE:
                self.closing = True

    def _refuse(self, status: int) -> None:
        """A request h11 cannot read: a bare error answer, then close."""
        http = self.http
        assert http is not None
        self.closing = True
        if http.our_state is h11.IDLE:
            headers = [("Content-Length", "0"), ("Connection", "close")]
            self.out += http.send(h11.Response(status_code=status, headers=headers)) or b""
            self.out += http.send(h11.EndOfMessage()) or b""

    def _switch(self) -> bytes:
        http = self.http
        assert http is not None
        trailing, _ = http.trailing_data
        self.http = None
        ws = self.ws = WebSocket(self.out, self.limit)
        return ws.feed(bytes(trailing)) if trailing else b""

    def send(self, buffers: Sequence[Chunk]) -> int:
        if self.out or self.inner.wants_write:
            self._flush()
            if self.out:
                return 0
            if self.http is not None:
                self._serve()  # the next pipelined request, now that its turn came
            return self._take(buffers)  # goes out on the next call
        taken = self._take(buffers)
        if self.out:
            self._flush()
        return taken

    def _take(self, buffers: Sequence[Chunk]) -> int:
        if self.ws is None or self.shut:  # frames for a page, not a session: dropped
            return sum(len(chunk) for chunk in buffers)
        return self.ws.take(buffers)

    def _flush(self) -> None:
        """One send of our bytes; then, if closing, the socket's sending side ends."""
        if self.out or self.inner.wants_write:
            with memoryview(self.out) as view:
                sent = self.inner.send([view] if self.out else ())
            del self.out[:sent]
        if self.closing and not self.out and not self.shut and not self.inner.wants_write:
            self.shut = True
            self.inner.shutdown_write()

    def shutdown_write(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.closing = True
        self._flush()

    def close(self) -> None:
        """Best effort (one non-blocking send) for a short last answer, such as
        the reply to the peer's close frame, then the socket goes."""
        if self.out and not self.shut:
            with contextlib.suppress(OSError), memoryview(self.out) as view:
                self.inner.send([view])
        self.out.clear()
        self.inner.close()
