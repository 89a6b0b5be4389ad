"""python -m ingest --config stack.yaml [--camera NAME ...]"""

from __future__ import annotations

import sys

from common import service
from ingest.worker import options, run


def main() -> int:
    p = service.parser("ingest", "Read cameras, sample frames, publish them onto Redis streams.")
    p.add_argument(
        "--camera", action="append", metavar="NAME", help="serve only this camera (repeatable; default: all)"
    )
    p.add_argument(
        "--progress", choices=["auto", "always", "never"], default="auto",
        help="progress bars for file and image-folder cameras on stderr (auto: when it is a terminal)",
    )  # fmt: skip
    p.epilog = "--max-frames applies per camera. SIGHUP reloads the config: cameras are added, removed or restarted."
    return service.main("ingest", p, run, options)


if __name__ == "__main__":
    sys.exit(main())
