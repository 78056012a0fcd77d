"""``ecluse audit verify | show | init | checkpoints``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..audit import AuditLog, audit_settings
from ..auditkeys import AuditKeyError, ensure_keys, load_public_key, read_checkpoints
from ..config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="inspect and verify the audit log")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (overrides the config)")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    v = asub.add_parser(
        "verify",
        help="check the HMAC chain, the JSON Lines mirror and the signed checkpoints",
    )
    v.add_argument("--checkpoints", type=Path,
                   help="file holding the checkpoints (default: audit.checkpoint_file; with the "
                   "syslog sink, the file your syslog writes them to)")
    v.add_argument("--public-key", type=Path,
                   help="checkpoint public key (default: audit-checkpoint.pub in audit.key_dir)")
    v.set_defaults(func=cmd_verify)
    i = asub.add_parser("init", help="create the audit keys when missing (install time)")
    i.set_defaults(func=cmd_init)
    c = asub.add_parser(
        "checkpoints",
        help="check the signatures of a checkpoint file with the public key only (off-host)",
    )
    c.add_argument("file", type=Path, help="checkpoint file or syslog file")
    c.add_argument("--public-key", type=Path, required=True, help="audit-checkpoint.pub")
    c.set_defaults(func=cmd_checkpoints)
    s = asub.add_parser("show", help="list audit events")
    s.add_argument("--user", help="only events by this person, under any of their names "
                   "(identity.alias_migrated records: ecluse migrate identities)")
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


def _settings(args: argparse.Namespace):
    return load_settings(args.config, state_dir=args.state_dir)


def _log(args: argparse.Namespace) -> AuditLog:
    # a reader: never creates keys, never writes
    return AuditLog.from_settings(_settings(args), writer=False)


def cmd_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        log = AuditLog.from_settings(settings, writer=False)
        public_key = load_public_key(args.public_key) if args.public_key else None
    except AuditKeyError as e:
        print(f"cannot verify: {e}")
        return 2
    if log.keys is None:
        key_dir = audit_settings(settings).key_dir
        print(f"cannot verify: no audit key in {key_dir} (the HMAC chain needs it; restore "
              "the key directory from backup)")
        return 2
    result = log.verify(checkpoints=args.checkpoints, public_key=public_key)
    if result.ok:
        print(f"audit log OK: {result.count} records, chain intact")
        for n in result.notes:
            print(f"  {n}")
        return 0
    print(f"audit log BROKEN: {len(result.problems)} problem(s) in {result.count} records")
    for p in result.problems:
        print(f"  - {p}")
    for n in result.notes:
        print(f"  ({n})")
    return 1


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    conf = audit_settings(settings)
    keys = ensure_keys(conf.key_dir)
    print(f"audit keys in {conf.key_dir} (HMAC key id {keys.key_id})")
    print(f"checkpoint public key (give it to whoever verifies off-host): "
          f"{conf.key_dir / 'audit-checkpoint.pub'}")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    try:
        read = read_checkpoints(args.file, load_public_key(args.public_key))
    except AuditKeyError as e:
        print(f"cannot check: {e}")
        return 2
    logs: dict[str, list] = {}
    for cp in read.checkpoints:
        logs.setdefault(cp.log, []).append(cp)
    for log_id, cps in sorted(logs.items()):
        last = max(cps, key=lambda cp: cp.count)
        print(f"log {log_id}: {len(cps)} valid checkpoint(s), last: {last.count} records, "
              f"head {last.head[:16]}..., {last.ts}")
    for p in read.problems:
        print(f"  - {p}")
    if read.problems or not read.checkpoints:
        print("checkpoints BROKEN" if read.problems else "no checkpoint found")
        return 1
    return 0


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
