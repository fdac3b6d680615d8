"""The web listener: the browser client's files and the chat protocol over WebSocket.

One HTTP/1.1 listener (``http_port``, contract §21) serves the static web
client at ``/`` and upgrades ``/ws`` to a WebSocket that carries the chat
frames. The whole HTTP and WebSocket exchange lives in one transport
(:class:`chatd.web.transport.WebTransport`) that wraps the socket (or TLS)
transport, so a browser's session is an ordinary chat connection: same
:class:`~chatd.connection.Connection`, core, backpressure and timeouts.
"""
