"""A folder of images (or a list file of them) standing for a camera."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from common.plugins import SOURCES
from common.settings import ConfigPath, SourceSettings
from ingest.sources.base import FrameError, SourceError


class ImagesSourceConfig(SourceSettings):
    kind: Literal["images"] = "images"
    path: ConfigPath = Field(
        description="Folder of images, read in name order; or a text file listing images, one path a line (relative "
        "to the list's folder), read in that order."
    )
    pattern: str = Field(
        "*", min_length=1, description="Glob of the names to read in the folder, e.g. '*.jpg' ('**/*': subfolders too)."
    )
    fps: float = Field(10.0, gt=0, le=1000, description="Frame rate the folder stands for (sampling, pacing).")
    loop: bool = Field(False, description="Start over after the last image instead of finishing.")
    realtime: bool = Field(False, description="Pace images at fps.")


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class ImagesSource:
    """A folder of images in name order, or the images a list file names in its order, standing for a camera at
    ``fps``."""

    live = False

    def __init__(self, cfg: ImagesSourceConfig) -> None:
        self.cfg = cfg
        self.fps: float | None = cfg.fps
        self._files = _image_list(Path(cfg.path)) if Path(cfg.path).is_file() else _image_folder(Path(cfg.path), cfg)
        self.total = None if cfg.loop else len(self._files)
        self._index = -1

    def grab(self) -> float | None:
        if self._index + 1 >= len(self._files) and not self.cfg.loop:
            return None
        self._index += 1
        return self._index / self.cfg.fps

    def retrieve(self) -> np.ndarray:
        path = self._files[self._index % len(self._files)]
        # The pixels as stored, like PIL's Image.open, which TrainYourOwnYOLO trains and detects with: an EXIF
        # orientation tag is not applied.
        image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise FrameError(f"{path} is not a readable image (missing, truncated, or not an image format)")
        frame: np.ndarray = image
        return frame

    def origin(self) -> tuple[str, int | None] | None:
        return str(self._files[self._index % len(self._files)]), None

    def close(self) -> None:
        pass


def _image_folder(folder: Path, cfg: ImagesSourceConfig) -> list[Path]:
    if not folder.is_dir():
        raise SourceError(f"image folder {folder} does not exist: fix the camera's source.path")
    files = sorted(p for p in folder.glob(cfg.pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SourceError(f"image folder {folder} has no images matching {cfg.pattern!r}")
    return files


def _image_list(listing: Path) -> list[Path]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"image list {listing} cannot be read ({exc}): fix the camera's source.path") from None
    files = [listing.parent / line.strip() for line in lines if line.strip()]
    if not files:
        raise SourceError(f"image list {listing} names no images: one path a line")
    return files


SOURCES.register(ImagesSourceConfig, lambda cfg, _threads: ImagesSource(cfg))
