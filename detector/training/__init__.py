"""Training and scoring the bundled demo model (``python -m detector.training.train``): never on the detector's
runtime path, which only loads the model files this writes."""
