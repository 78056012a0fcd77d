"""The caching server behind the front: proxpi, on loopback only.

``python -m ecluse.mirror.backend PORT``: proxpi's Flask application (which
reads its ``PROXPI_*`` settings from the environment, :func:`backend_env`)
served by werkzeug's threaded server on ``127.0.0.1:PORT``. Only the front
talks to it; it asks the upstream index only for what the front forwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: seconds proxpi waits for a download before it would answer with a redirect to
#: the upstream file (which a workspace cannot follow): long, so it never does
DOWNLOAD_TIMEOUT = 600


def backend_env(upstream: str, cache_dir: Path) -> dict[str, str]:
    """proxpi's settings: one upstream index, its cache folder, no redirect upstream."""
    return {
        "PROXPI_INDEX_URL": upstream,
        "PROXPI_EXTRA_INDEX_URLS": "",
        "PROXPI_CACHE_DIR": str(cache_dir),
        "PROXPI_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT),
        "PROXPI_INDEX_TTL": "1800",
        "PROXPI_LOGGING_LEVEL": "WARNING",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m ecluse.mirror.backend PORT", file=sys.stderr)
        return 2
    import logging

    from proxpi.server import app
    from werkzeug.serving import run_simple

    # no line per request: the front logs what it refuses, the backend only problems
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_simple("127.0.0.1", int(argv[0]), app, threaded=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
