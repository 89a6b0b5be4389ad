"""Sinks: consume result streams through their own consumer group and store or forward the results."""
