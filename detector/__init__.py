"""Detector: consume frames through a consumer group, batch across streams, run YOLO, publish results.

``from detector import YOLO`` is TrainYourOwnYOLO's YOLO class, for code that already uses it; it loads only when
asked for, so the detector service (and every plug-in discovery) never imports the façade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detector.compat import YOLO

__all__ = ["YOLO"]


def __getattr__(name: str) -> Any:
    if name == "YOLO":
        from detector.compat import YOLO

        return YOLO
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
