"""python -m ingest --config stack.yaml"""

from __future__ import annotations

import sys

from common import service
from ingest.worker import run


def main() -> int:
    p = service.parser("ingest", "Read cameras, sample frames, publish them onto Redis streams.")
    p.epilog = "--max-frames applies per camera."
    return service.main("ingest", p, run)


if __name__ == "__main__":
    sys.exit(main())
