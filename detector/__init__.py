"""Detector: consume frames through a consumer group, batch across streams, run YOLO, publish results.

``from detector import YOLO`` is TrainYourOwnYOLO's YOLO class, for code that already uses it.
"""

from detector.compat import YOLO

__all__ = ["YOLO"]
