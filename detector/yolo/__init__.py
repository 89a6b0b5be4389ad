"""YOLOv3 (keras-yolo3 / TrainYourOwnYOLO): architecture, model files, letterbox, decode and NMS."""
