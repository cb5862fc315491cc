"""A TCP proxy that a test can cut: a network partition between a process and a server.

`TcpProxy` forwards each connection to its target, both ways, until the test calls
`hold()`: from then on what the clients send is read and dropped, so a client waiting
for an answer (a broker's publish, say) waits for ever, and nothing it sent reaches the
server. `sever()` closes every connection (what was held is lost) and forwards again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from tests.support.ports import free_port


class TcpProxy:
    """127.0.0.1:`port` forwarded to `target_host`:`target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._holding = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()
        return self

    def hold(self) -> None:
        """From now on, drop what the clients send: their requests never arrive."""
        self._holding.set()

    def sever(self) -> None:
        """Close every connection, losing what was held, and forward new ones again."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)
        self._holding.clear()

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.sever()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (upstream and self._holding.is_set()):
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
