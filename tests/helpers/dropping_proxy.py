"""A TCP proxy on loopback that can lose answers: the request reaches the server, which applies it
and answers, and the proxy closes the client's connection instead of passing the answer on. What a
client sees when a connection breaks mid-call, made to happen on demand."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class DroppingProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.answers_to_drop = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self._take_drop():
                    break
                target.sendall(data)
        except OSError:
            pass  # either side closed: close the other
        for s in (source, target):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _take_drop(self) -> bool:
        with self._lock:
            if self.answers_to_drop <= 0:
                return False
            self.answers_to_drop -= 1
            self.dropped += 1
            return True

    def close(self) -> None:
        self._listener.close()


@contextmanager
def dropping_proxy(host: str, port: int) -> Iterator[DroppingProxy]:
    proxy = DroppingProxy((host, port))
    threading.Thread(target=proxy.serve, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.close()
