"""Ingest: read camera streams, sample frames, publish them onto Redis streams."""
