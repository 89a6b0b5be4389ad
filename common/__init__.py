"""Shared core of the stack: config, wire format, stream names, Redis access, the embedded server."""
