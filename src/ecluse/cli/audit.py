"""``ecluse audit verify`` and ``ecluse audit show``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from ..audit import AuditLog
from ..config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="inspect and verify the audit log")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (overrides the config)")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    v = asub.add_parser("verify", help="check the hash chain and the JSON Lines mirror")
    v.set_defaults(func=cmd_verify)
    s = asub.add_parser("show", help="list audit events")
    s.add_argument("--user", help="only events by this user")
    s.add_argument("--project", help="only events about this project")
    s.add_argument("--event", help="only this event type (e.g. login.failure)")
    s.add_argument(
        "--since", type=parse_since, help="ISO date/time, or a duration such as 2h, 3d, 30m"
    )
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=cmd_show)


def parse_since(value: str) -> datetime:
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date/time (2026-11-25T10:00) or a duration (2h, 3d), got {value!r}"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _log(args: argparse.Namespace) -> AuditLog:
    return AuditLog.from_settings(load_settings(args.config, state_dir=args.state_dir))


def cmd_verify(args: argparse.Namespace) -> int:
    result = _log(args).verify()
    if result.ok:
        print(f"audit log OK: {result.count} records, chain intact")
        return 0
    print(f"audit log BROKEN: {len(result.problems)} problem(s) in {result.count} records")
    for p in result.problems:
        print(f"  - {p}")
    return 1


def cmd_show(args: argparse.Namespace) -> int:
    records = _log(args).records(
        user=args.user, since=args.since, event=args.event, project=args.project
    )
    for r in records:
        if args.json:
            print(json.dumps(r.to_dict(), ensure_ascii=False))
        else:
            details = " ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
            print(
                f"{r.seq:>6} {r.ts[:19]} {r.event:<24} {r.outcome:<8} "
                f"{r.actor or '-':<12} {r.project or '-':<14} {details}"
            )
    return 0
