"""An HLS stream for tests: FFmpeg (from the imageio-ffmpeg wheel) cuts a test pattern into segments, and a
plain HTTP server serves the playlist and the segments."""

from __future__ import annotations

import functools
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def ffmpeg() -> str | None:
    """The FFmpeg executable shipped by imageio-ffmpeg, or None when it is not installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def make_hls(folder: Path, seconds: int = 4, fps: int = 10, size: str = "320x240") -> Path:
    exe = ffmpeg()
    assert exe is not None
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "index.m3u8"
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}",
         "-t", str(seconds), "-c:v", "mpeg2video", "-q:v", "4", "-f", "hls", "-hls_time", "1",
         "-hls_playlist_type", "vod", str(playlist)],
        check=True, timeout=120,
    )  # fmt: skip
    return playlist


class Folder:
    """Serves a folder over HTTP on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
