"""Frame sources: video files, RTSP, HTTP (MJPEG, HLS), webcams, folders of images, and a synthetic camera; one
plug-in module each (see ``common.plugins``), opened by :func:`open_source` from a camera's ``source`` settings.

A source is read in two steps so that a live stream is drained at its native rate while only the sampled frames
are converted to BGR (a compressed stream's frames refer to earlier ones, so its decoder decodes every frame, unless
the camera is sampled by time and keyframes come at least once per interval: then the video sources decode keyframes
alone, see ``_av.py``): ``grab()`` takes the next frame and returns its timestamp (None at the end of a finite source;
:class:`SourceError` when the source broke), ``retrieve()`` decodes the frame grabbed last (:class:`FrameError`
when that one frame is unusable: it is skipped and counted).
"""

from __future__ import annotations

from common.plugins import SOURCES
from common.settings import SourceSettings
from ingest.sources.base import FrameError, Source, SourceError

__all__ = ["FrameError", "Source", "SourceError", "open_source"]


def open_source(cfg: SourceSettings, decoder_threads: int = 1) -> Source:
    """The source a camera's settings describe (``decoder_threads``: FFmpeg's, 0 for its default); raises
    :class:`SourceError` saying what failed and what to check."""
    source: Source = SOURCES.factory(cfg)(cfg, decoder_threads)
    return source
