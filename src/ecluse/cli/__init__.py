"""``ecluse`` command line: thin entry points over the library.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` — a callable
taking the parsed ``argparse.Namespace`` and returning the exit status.

Exit status: 0 success, 1 the command ran and found a problem (a check failed,
an audit chain is broken), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..config import ConfigError

#: sub-command modules, in the order shown by ``ecluse --help``
COMMANDS = ["up", "config", "check", "audit", "projects", "sandbox", "images", "airlock",
            "batch", "dask", "packages", "migrate", "dev"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecluse",
        description="Écluse trusted research environment: workspaces and airlock.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"ecluse: configuration error:\n{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
