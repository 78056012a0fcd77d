"""Is the virtualenv given as argument made from the interpreter running this script?

``make`` runs it with the Python it builds the virtualenv from. Exit 0: it is.
Exit 1: the virtualenv is missing, or was made from another interpreter (said
on stderr): ``make`` then makes it anew. A virtualenv of another interpreter
(an older checkout's, made from pyenv under ``/root``, mode 0700) would keep
the services' own users from running Écluse.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def base(cfg: Path) -> tuple[str, str] | None:
    """The folder of the interpreter a virtualenv was made from, and its X.Y version."""
    values = {}
    for line in cfg.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    home, version = values.get("home"), values.get("version") or values.get("version_info")
    if not home or not version:
        return None
    return os.path.realpath(home), ".".join(version.split(".")[:2])


def main(venv: str) -> int:
    cfg = Path(venv) / "pyvenv.cfg"
    if not cfg.is_file():
        return 1
    made_from = base(cfg)
    this = (os.path.dirname(os.path.realpath(sys.executable)),
            f"{sys.version_info[0]}.{sys.version_info[1]}")
    if made_from != this:
        print(f"{venv} was made from {made_from[0] if made_from else 'an unknown interpreter'}"
              f" (Python {made_from[1] if made_from else '?'}), not {sys.executable} "
              f"(Python {this[1]}): making it anew", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".venv"))
