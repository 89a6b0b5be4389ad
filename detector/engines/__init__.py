"""Inference engines, one plug-in module each (see ``common.plugins``), chosen by the pool's ``engine.kind``.

Every engine predicts a letterboxed batch (:class:`Engine`); an engine may also offer to decode and letterbox JPEG
frames on its own device (:class:`LoadsImages`, torch with nvJPEG), which the pipeline uses when it does, or to take
a batch the host letterboxed onto its device ahead of its turn (:class:`StagesBatches`, torch on CUDA). An engine
imports its framework only when it is created, so ingest and sinks never load TensorFlow or torch.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from common.plugins import ENGINES
from common.settings import EngineSettings
from detector.engines.base import (
    DeviceBatch,
    Engine,
    EngineError,
    Image,
    LoadsImages,
    StagesBatches,
    loads_images,
    run_batch,
    stages_batches,
)

if TYPE_CHECKING:
    from detector.model import ModelSpec

__all__ = [
    "DeviceBatch",
    "Engine",
    "EngineError",
    "Image",
    "LoadsImages",
    "StagesBatches",
    "create_engine",
    "extra_hint",
    "loads_images",
    "missing_extra",
    "run_batch",
    "stages_batches",
]


def extra_hint(kind: str) -> str:
    """What to install for engine ``kind``."""
    return f"the {kind} engine needs the {kind} extra: pip install 'streamyolo[{kind}]'"


def missing_extra(kind: str) -> str | None:
    """Why engine ``kind`` cannot run here (modules of its extra that are not installed), or None."""
    absent = [m for m in ENGINES.kinds()[kind].needs if not _installed(m)]
    return f"{extra_hint(kind)} (missing: {', '.join(absent)})" if absent else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a broken half-installed package
        return False


def create_engine(cfg: EngineSettings, spec: ModelSpec, max_batch: int | None = None) -> Engine:
    """The engine ``cfg`` names; ``max_batch``: the largest batch it will be given (an engine may size for it)."""
    engine: Engine = ENGINES.factory(cfg)(cfg, spec, max_batch)
    return engine
