"""The web view's app (Starlette): the page, its static files and a JSON/JPEG/MP4 API over a :class:`View`.

The page is ``static/index.html`` with its stylesheet and script beside it (``view.css``, ``view.js``), read once
when the app is made and served as they are; nothing of it is inline, so its Content-Security-Policy lets only
files of this origin run (no inline code, no eval) and, in browsers that know Trusted Types, no string becomes
markup. The page polls ``/api/streams`` and, for the stream picked, ``/api/streams/{name}/detections``; the image is
``/api/streams/{name}/frame.jpg``: the frame of the stream's latest result, read back from its frames stream only
when asked for and drawn (by the snapshot action's code) once per frame.

With a tracker the page shows a grid instead: per camera ``/api/streams/{name}/tracks.jpg`` (the frame of its
latest tracks, each box labelled with its track id, each track's trail) and ``/api/streams/{name}/counts`` (the
tracker's counts hash), and ``/api/events`` (the recent events, newest first), each event with
``/api/events/{stream}/{event_id}/snapshot.jpg`` (its best frame, cropped around the box; 404 saying so once that
frame is trimmed away) and ``.../clip.mp4`` (made from the frames still kept, see ``sink.clips``).

With ``auth`` (:mod:`sink.web.auth`) every route but the login form is behind :class:`~sink.web.auth.AuthMiddleware`;
``/api/me`` tells the page who is logged in.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from importlib.resources import files

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from common.codec import EncodeError, encode_image
from common.keys import valid_stream_name
from common.redis_io import FetchFrame, RedisIOError, Unavailable
from common.wire import Event, Result, Tracks
from sink.clips import ClipError
from sink.draw import draw_detections, frame_image
from sink.web.auth import Auth, AuthMiddleware, login_routes
from sink.web.drawing import draw_best, draw_tracks
from sink.web.view import View

log = logging.getLogger(__name__)


PAGE = "index.html"
LOGIN_PAGE = "login.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
"""The static files served, by suffix; any other file in ``static/`` is not served."""

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

# Only this origin's own files: the page's script and stylesheet (JSON and JPEG, served with nosniff, never run as
# script or style); nothing inline, no eval; DOM sinks take no strings (Trusted Types, where the browser has them);
# forms (the logout button) post to this origin only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
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
    for page in (PAGE, LOGIN_PAGE):
        if page not in found:
            raise FileNotFoundError(
                f"the web view's {page} is missing from {folder} (an install without package data?)"
            )
    return found


ClipMaker = Callable[[Event], bytes]
"""An event -> its clip (MP4); raises :class:`~sink.clips.ClipError` when none can be made."""
Counts = Callable[[str], dict[str, int]]
"""A camera -> its tracker's counts."""

SNAPSHOTS_KEPT = 256
"""Events' snapshots kept drawn (a few MB): an event's best shot never changes, each viewer's poll reuses it."""
CLIP_WAIT_S = 30.0
"""A clip asked for while another is being made waits this long for its turn, then gets a 503."""


def clip_span(event: Event, pre_roll_s: float, post_roll_s: float, max_s: float) -> tuple[float, float, float]:
    """(start, end, pre-roll) of an event's clip: from its track's first sighting (less the pre-roll) to the event
    (and the post-roll after it); at most ``max_s``, the part that ends at the event kept."""
    end = max(event.capture_ts, event.last_seen_ts) + post_roll_s
    start = event.first_seen_ts
    if end - (start - pre_roll_s) <= max_s:
        return start, end, pre_roll_s
    return max(start, end - max_s), end, max(0.0, min(pre_roll_s, start - (end - max_s)))


def create_app(
    view: View,
    fetch: FetchFrame,
    jpeg_quality: int = 80,
    *,
    auth: Auth | None = None,
    clip: ClipMaker | None = None,
    counts: Counts | None = None,
) -> Starlette:
    """The page and its API over a view; ``fetch`` reads a frame back from its frames stream, ``clip`` makes an
    event's clip and ``counts`` reads a camera's counts (with a tracker), ``auth`` guards every route."""
    assets = static_files()
    drawn: dict[tuple[str, str], tuple[str, bytes]] = {}
    """(stream, what) -> (frame id, JPEG) of the last frame drawn: each frame is drawn once, not per viewer."""
    drawn_lock = threading.Lock()
    snapshots: OrderedDict[tuple[str, str], bytes] = OrderedDict()
    clips_made = threading.Semaphore(1)  # one encode at a time: a clip takes a core for a while

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
        return JSONResponse(
            {"window_s": view.window_s, "tracker": view.tracker, "streams": view.summary()}, headers=_NO_STORE
        )

    def detections(request: Request) -> Response:
        name = stream_of(request)
        return JSONResponse({"stream": name, "detections": view.detections(name)}, headers=_NO_STORE)

    def latest_drawn(name: str, what: str, shown: Result | Tracks | None, draw: Callable[[], bytes | None]) -> Response:
        """The JPEG of the frame ``shown`` answers, drawn once; the last one drawn while it cannot be read."""
        with drawn_lock:
            cached = drawn.get((name, what))
        if shown is not None and (cached is None or cached[0] != shown.frame_id):
            jpeg = draw()
            if jpeg is not None:  # else the frame is gone: the last one drawn stands in
                cached = (shown.frame_id, jpeg)
                with drawn_lock:
                    drawn[(name, what)] = cached
        if cached is None:
            raise HTTPException(404, "no frame of this stream is kept any more")
        return Response(cached[1], media_type="image/jpeg", headers={"X-Frame-Id": cached[0], **_NO_STORE})

    def frame(request: Request) -> Response:
        name = stream_of(request)
        result = view.latest(name)
        return latest_drawn(name, "result", result, lambda: _render(fetch, result, jpeg_quality) if result else None)

    def tracks_frame(request: Request) -> Response:
        name = stream_of(request)
        tracks, trails = view.tracked(name)

        def draw() -> bytes | None:
            if tracks is None:
                return None
            image = _image(fetch, tracks.stream, tracks.frame_id)
            if image is None:
                return None
            draw_tracks(image, tracks, trails)
            return _jpeg(image, jpeg_quality, tracks.stream, tracks.frame_id)

        return latest_drawn(name, "tracks", tracks, draw)

    def stream_counts(request: Request) -> Response:
        name = stream_of(request)
        if counts is None:
            raise HTTPException(404, "this view follows no tracker")
        try:
            found = counts(name)
        except RedisIOError as exc:
            raise HTTPException(503, "redis unavailable") from exc
        return JSONResponse({"stream": name, "counts": found}, headers=_NO_STORE)

    def events(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            raise HTTPException(400, "limit must be a number") from None
        if not 1 <= limit <= 1000:
            raise HTTPException(400, "limit must be from 1 to 1000")
        return JSONResponse({"tracker": view.tracker, "events": view.events(limit)}, headers=_NO_STORE)

    def event_of(request: Request) -> Event:
        name = str(request.path_params["stream"])
        if not valid_stream_name(name):
            raise HTTPException(400, "not a stream name")
        try:  # looked up among the events kept: an id never reaches a key
            return view.event(name, str(request.path_params["event_id"]))
        except KeyError:
            raise HTTPException(404, "no such event among the recent ones") from None

    def snapshot(request: Request) -> Response:
        event = event_of(request)
        key = (event.stream, event.event_id)
        with drawn_lock:
            jpeg = snapshots.get(key)
        if jpeg is None:
            image = _image(fetch, event.stream, event.best.frame_id)
            if image is None:
                raise HTTPException(
                    404, f"the frame of this event's best shot is gone: the frames stream of {event.stream} keeps "
                    "only its newest frames (streams.frames_maxlen)"
                )  # fmt: skip
            image = draw_best(image, event.best.box, (event.width, event.height), f"#{event.track_id} {event.label}")
            jpeg = _jpeg(image, jpeg_quality, event.stream, event.best.frame_id)
            if jpeg is None:
                raise HTTPException(404, "the frame of this event's best shot cannot be shown")
            with drawn_lock:
                snapshots[key] = jpeg
                while len(snapshots) > SNAPSHOTS_KEPT:
                    snapshots.popitem(last=False)
        return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Id": event.best.frame_id, **_NO_STORE})

    def event_clip(request: Request) -> Response:
        event = event_of(request)
        if clip is None:
            raise HTTPException(404, "this view makes no clips")
        if not clips_made.acquire(timeout=CLIP_WAIT_S):
            raise HTTPException(503, "another clip is being made: try again shortly", headers={"Retry-After": "5"})
        try:
            data = clip(event)
        except ClipError as exc:
            raise HTTPException(404, str(exc)) from exc
        except Unavailable as exc:
            raise HTTPException(503, "redis unavailable") from exc
        finally:
            clips_made.release()
        name = f"{event.stream}-track{event.track_id}-{event.event}.mp4"
        return Response(data, media_type="video/mp4",
                        headers={"Content-Disposition": f'inline; filename="{name}"', **_NO_STORE})  # fmt: skip

    def me(request: Request) -> Response:
        user = request.scope.get("user")
        return JSONResponse({"user": user, "auth": auth.mode if auth else None,
                             "logout": auth is not None and auth.mode == "password"}, headers=_NO_STORE)  # fmt: skip

    routes = [
        Route("/", page),
        Route("/static/{file}", static),
        Route("/api/me", me),
        Route("/api/streams", streams),
        Route("/api/streams/{name}/detections", detections),
        Route("/api/streams/{name}/frame.jpg", frame),
        Route("/api/streams/{name}/tracks.jpg", tracks_frame),
        Route("/api/streams/{name}/counts", stream_counts),
        Route("/api/events", events),
        Route("/api/events/{stream}/{event_id}/snapshot.jpg", snapshot),
        Route("/api/events/{stream}/{event_id}/clip.mp4", event_clip),
    ]
    middleware = []
    if auth is not None:
        if auth.mode == "password":
            routes += login_routes(auth, assets[LOGIN_PAGE][0])
        middleware.append(Middleware(AuthMiddleware, auth=auth))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _error})


def _error(_: Request, exc: Exception) -> Response:
    """Errors as plain text, never stored nor sniffed (as every answer of the app)."""
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(exc.detail, exc.status_code, headers={**(exc.headers or {}), **_NO_STORE})


def _render(fetch: FetchFrame, result: Result, quality: int) -> bytes | None:
    """The result's frame as JPEG with its boxes drawn; None when it is gone or cannot be read."""
    image = _image(fetch, result.stream, result.frame_id)
    if image is None:
        return None
    draw_detections(image, result)
    return _jpeg(image, quality, result.stream, result.frame_id)


def _image(fetch: FetchFrame, stream: str, frame_id: str) -> np.ndarray | None:
    """A frame's image, writable; None when it is gone or cannot be read (503 when Redis cannot be reached)."""
    try:
        found = fetch(stream, frame_id)
        return None if found is None else frame_image(found)
    except Unavailable as exc:
        raise HTTPException(503, "redis unavailable") from exc
    except ValueError as exc:  # WireError too: a bad frame is shown as missing, not as a server error
        log.warning("frame %s of %s cannot be shown: %s", frame_id, stream, exc)
        return None


def _jpeg(image: np.ndarray, quality: int, stream: str, frame_id: str) -> bytes | None:
    try:
        return encode_image(image, "jpeg", quality)
    except EncodeError as exc:
        log.warning("frame %s of %s cannot be shown: %s", frame_id, stream, exc)
        return None
