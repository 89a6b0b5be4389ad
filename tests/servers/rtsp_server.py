"""A real RTSP server for the ingest tests: GStreamer's RTSP server, MJPEG over RTP, a moving test pattern.

Run with a Python that has GStreamer's introspection bindings (Debian: python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-good), e.g. ``/usr/bin/python3 tests/servers/rtsp_server.py PORT [FPS] [WIDTH] [HEIGHT]``.
It prints ``ready rtsp://127.0.0.1:PORT/cam`` once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port = sys.argv[1]
    fps = sys.argv[2] if len(sys.argv) > 2 else "10"
    width = sys.argv[3] if len(sys.argv) > 3 else "320"
    height = sys.argv[4] if len(sys.argv) > 4 else "240"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1,format=I420 "
        "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"  # RTP/JPEG wants 4:2:0
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"ready rtsp://127.0.0.1:{port}/cam", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
