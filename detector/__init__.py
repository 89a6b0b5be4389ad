"""Detector: consume frames through a consumer group, batch across streams, run YOLO, publish results."""
