"""``ecluse config check`` and ``ecluse config reference``."""

from __future__ import annotations

import argparse

import yaml

from ..config import ConfigError, effective_settings, load_settings
from ..directory import DirectoryUnavailable, check_group_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate and show the deployment configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    check = csub.add_parser("check", help="validate and print the effective settings")
    check.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    check.set_defaults(func=cmd_check)
    ref = csub.add_parser("reference", help="print the configuration reference (Markdown)")
    ref.set_defaults(func=cmd_reference)


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        groups = check_group_names(settings)
    except ConfigError as e:
        print(f"# {settings.config_file}: ERROR {e}")
        return 1
    except DirectoryUnavailable as e:
        groups = [f"groups not checked against the directory: {e}"]
    print(f"# {settings.config_file}: OK ({len(settings.projects)} projects)")
    for line in groups:  # what to change: bare group names and the DN each resolved to
        print(f"# {line}")
    print(yaml.safe_dump(effective_settings(settings), sort_keys=False, allow_unicode=True))
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from ..docs import config_reference  # deferred: start-up time

    print(config_reference())
    return 0
