"""A live HTTP MJPEG camera for tests: multipart/x-mixed-replace JPEGs of a moving square, at a fixed rate."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = "frameboundary"


class MjpegCamera:
    """``start()`` listens on 127.0.0.1 (the same port again after ``stop()``), ``stop()`` drops every client."""

    def __init__(self, fps: float = 10.0, size: tuple[int, int] = (320, 240), port: int = 0) -> None:
        self.fps = fps
        self.size = size
        self.port = port or _free_port()
        self._server: ThreadingHTTPServer | None = None
        self._running = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def frame(self, index: int) -> bytes:
        w, h = self.size
        img = np.full((h, w, 3), 50, np.uint8)
        x = (index * 7) % (w - 40)
        cv2.rectangle(img, (x, h // 3), (x + 40, h // 3 + 40), (0, 220, 255), -1)
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        return bytes(buf.tobytes())

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                index = 0
                next_at = time.monotonic()
                try:
                    while camera._running.is_set():
                        jpeg = camera.frame(index)
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                        index += 1
                        next_at += 1 / camera.fps
                        time.sleep(max(0.0, next_at - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._running.set()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The camera dies: the listener closes and every streaming client is cut off."""
        self._running.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
