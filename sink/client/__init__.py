"""Reading the results from outside the stack, without a consumer group (nothing waits on a reader, and readers
take nothing from the sinks): ``subscribe`` in Python, ``python -m sink tail`` on a terminal."""

from sink.client.subscribe import subscribe

__all__ = ["subscribe"]
