"""``ecluse migrate identities``: names from before canonical hub names, mapped to one person."""

from __future__ import annotations

import argparse
import getpass
import json

from ..config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="migrate a deployment's stored data")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (overrides the config)")
    msub = p.add_subparsers(dest="migrate_command", metavar="WHAT")
    msub.required = True
    i = msub.add_parser(
        "identities",
        help="map hub users, airlock requests/reviews and audit actors named by a login "
        "alias to the directory entry's canonical uid (audited; stop the hub first)",
    )
    i.add_argument("--dry-run", action="store_true", help="only say what would change")
    i.add_argument("--json", action="store_true", help="the report as one JSON object")
    i.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_identities)


def cmd_identities(args: argparse.Namespace) -> int:
    from ..identities import IdentityMigration, MigrationError  # deferred: start-up time

    settings = load_settings(args.config, state_dir=args.state_dir)
    try:
        report = IdentityMigration(settings, actor=f"cli:{getpass.getuser()}").run(
            dry_run=args.dry_run)
    except MigrationError as e:
        print(f"ecluse migrate identities: {e}")
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, default=str))
    else:
        for line in report.lines():
            print(line)
    return 0
