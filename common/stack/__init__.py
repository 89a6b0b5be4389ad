"""The stack-wide tools, which see every service at once: the launcher (``streamyolo``: one command runs the whole
stack locally), status (``python -m common.stack.status``: every stream, group and replica) and the health probe
(``python -m common.stack.health``: a container's healthcheck)."""
