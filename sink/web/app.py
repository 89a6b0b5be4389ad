"""The web view's app (Starlette): the page, its static files and a JSON/JPEG API over a :class:`View`.

The page is ``static/index.html`` with its stylesheet and script beside it (``view.css``, ``view.js``), read once
when the app is made and served as they are; nothing of it is inline, so its Content-Security-Policy lets only
files of this origin run (no inline code, no eval) and, in browsers that know Trusted Types, no string becomes
markup. The page polls ``/api/streams`` and, for the stream picked, ``/api/streams/{name}/detections``; the image is
``/api/streams/{name}/frame.jpg``: the frame of the stream's latest result, read back from its frames stream only
when asked for and drawn (by the snapshot action's code) once per frame.
"""

from __future__ import annotations

import logging
import threading
from importlib.resources import files

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from common.codec import EncodeError, encode_image
from common.keys import valid_stream_name
from common.redis_io import FetchFrame, Unavailable
from common.wire import Result
from sink.draw import draw_detections, frame_image
from sink.web.view import View

log = logging.getLogger(__name__)


PAGE = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
"""The static files served, by suffix; any other file in ``static/`` is not served."""

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

# Only this origin's own files: the page's script and stylesheet (JSON and JPEG, served with nosniff, never run as
# script or style); nothing inline, no eval; DOM sinks take no strings (Trusted Types, where the browser has them).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files (name -> content, media type), read from the package's ``static/`` folder."""
    folder = files(__package__ or "sink.web") / "static"
    found = {}
    for item in folder.iterdir():
        media = MEDIA_TYPES.get("." + item.name.rpartition(".")[2])
        if item.is_file() and media is not None:
            found[item.name] = (item.read_bytes(), media)
    if PAGE not in found:
        raise FileNotFoundError(f"the web view's {PAGE} is missing from {folder} (an install without package data?)")
    return found


def create_app(view: View, fetch: FetchFrame, jpeg_quality: int = 80) -> Starlette:
    """The page and its API over a view; ``fetch`` reads a frame back from its frames stream."""
    assets = static_files()
    drawn: dict[str, tuple[str, bytes]] = {}
    """Stream -> (frame id, JPEG with boxes) of the last frame drawn: each frame is drawn once, not per viewer."""
    drawn_lock = threading.Lock()

    def stream_of(request: Request) -> str:
        name = str(request.path_params["name"])
        if not valid_stream_name(name):  # checked before any lookup: a name never reaches a key unchecked
            raise HTTPException(400, "not a stream name")
        if name not in view.names():
            raise HTTPException(404, "no such stream")
        return name

    def page(_: Request) -> Response:
        content, media = assets[PAGE]
        return Response(content, media_type=media, headers={"Content-Security-Policy": CSP, **_NO_STORE})

    def static(request: Request) -> Response:
        found = assets.get(str(request.path_params["file"]))
        if found is None:
            raise HTTPException(404, "no such file")
        return Response(found[0], media_type=found[1], headers=_NO_STORE)

    def streams(_: Request) -> Response:
        return JSONResponse({"window_s": view.window_s, "streams": view.summary()}, headers=_NO_STORE)

    def detections(request: Request) -> Response:
        name = stream_of(request)
        return JSONResponse({"stream": name, "detections": view.detections(name)}, headers=_NO_STORE)

    def frame(request: Request) -> Response:
        name = stream_of(request)
        result = view.latest(name)
        with drawn_lock:
            cached = drawn.get(name)
        if result is not None and (cached is None or cached[0] != result.frame_id):
            jpeg = _render(fetch, result, jpeg_quality)
            if jpeg is not None:  # else the frame is gone: the last one drawn stands in
                cached = (result.frame_id, jpeg)
                with drawn_lock:
                    drawn[name] = cached
        if cached is None:
            raise HTTPException(404, "no frame of this stream is kept any more")
        return Response(cached[1], media_type="image/jpeg", headers={"X-Frame-Id": cached[0], **_NO_STORE})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/static/{file}", static),
            Route("/api/streams", streams),
            Route("/api/streams/{name}/detections", detections),
            Route("/api/streams/{name}/frame.jpg", frame),
        ],
        exception_handlers={HTTPException: _error},
    )


def _error(_: Request, exc: Exception) -> Response:
    """Errors as plain text, never stored nor sniffed (as every answer of the app)."""
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(exc.detail, exc.status_code, headers={**(exc.headers or {}), **_NO_STORE})


def _render(fetch: FetchFrame, result: Result, quality: int) -> bytes | None:
    """The result's frame as JPEG with its boxes drawn; None when it is gone or cannot be read."""
    try:
        found = fetch(result.stream, result.frame_id)
        if found is None:
            return None
        image = frame_image(found)
    except Unavailable as exc:
        raise HTTPException(503, "redis unavailable") from exc
    except ValueError as exc:  # WireError too: a bad frame is shown as missing, not as a server error
        log.warning("frame %s of %s cannot be shown: %s", result.frame_id, result.stream, exc)
        return None
    draw_detections(image, result)
    try:
        return encode_image(image, "jpeg", quality)
    except EncodeError as exc:
        log.warning("frame %s of %s cannot be shown: %s", result.frame_id, result.stream, exc)
        return None
