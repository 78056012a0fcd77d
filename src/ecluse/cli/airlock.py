"""``ecluse airlock serve | migrate | list | purge | verify-release``: thin entry points over the airlock."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys

from ..config import load_settings
from ..settings.airlock import airlock_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("airlock", help="the export airlock service")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (overrides the config)")
    asub = p.add_subparsers(dest="airlock_command", metavar="ACTION")
    asub.required = True
    s = asub.add_parser("serve", help="run the service (started by the hub as a managed service)")
    s.set_defaults(func=cmd_serve)
    m = asub.add_parser("migrate", help="bring the airlock database to the latest schema")
    m.set_defaults(func=cmd_migrate)
    ls = asub.add_parser("list", help="list requests (as staff)")
    ls.add_argument("--state", help="only requests in this state")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)
    pg = asub.add_parser(
        "purge",
        help="delete the staged files of requests withdrawn or rejected more than "
        "purge_after_days ago (audited; the running service also does it hourly)",
    )
    pg.add_argument("--dry-run", action="store_true", help="only list what would be purged")
    pg.add_argument("--json", action="store_true", help="one JSON object per line")
    pg.set_defaults(func=cmd_purge)
    vr = asub.add_parser(
        "verify-release",
        help="check a release package against the audit log: its record is the one "
        "audited at release, every file's sha256 is the record's, nothing extra or missing",
    )
    vr.add_argument("package", help="the release package (.zip) the requester downloaded")
    vr.set_defaults(func=cmd_verify_release)
    from .airlock_import import register as register_import  # deferred: a few lines here

    for q in (s, m, ls, pg, vr, *register_import(asub)):  # also accept the options after the action
        q.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        q.add_argument(
            "--state-dir", dest="state_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


def _settings(args: argparse.Namespace):
    return load_settings(args.config, state_dir=args.state_dir)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..airlock.service import AirlockService  # deferred: start-up time
    from ..airlock.web.app import bind_address, hub_oauth_from_env, serve  # deferred: start-up time

    settings = _settings(args)
    try:
        hub_oauth_from_env()
    except RuntimeError as e:
        print(f"ecluse airlock serve: {e}", file=sys.stderr)
        return 2
    from ..airlock.checkbox import CheckSandboxUnavailable  # deferred: start-up time

    conf = airlock_settings(settings)
    try:
        service = AirlockService.from_settings(
            settings, process_checks=True, background_checks=conf.check_in_background)
    except CheckSandboxUnavailable as e:
        print(f"ecluse airlock serve: {e}", file=sys.stderr)
        return 2
    # users' hub groups are re-checked against the directory (ecluse.hubservice.web)
    service.deployment = settings
    from ..airlock.ingress import IngressService  # deferred: start-up time

    if conf.imports.enabled:  # import requests (controlled ingress)
        service.ingress = IngressService.from_settings(settings, service)
    ip, port = bind_address(conf.ip, conf.port)
    asyncio.run(serve(service, ip=ip, port=port, state_dir=settings.state_dir))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..airlock import db  # deferred: start-up time

    settings = _settings(args)
    engine = db.make_engine(airlock_settings(settings).resolved_database_url(settings.db_dir))
    db.upgrade(engine)
    print(f"airlock database at revision {db.current_revision(engine)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..airlock.service import AirlockService  # deferred: start-up time

    settings = _settings(args)
    service = AirlockService.from_settings(settings)
    conf = airlock_settings(settings)
    staff = service.identity("ecluse-cli", [conf.staff_group])
    for r in service.list_requests(staff, scope="all", state=args.state, limit=1000):
        if args.json:
            print(json.dumps(r, ensure_ascii=False))
        else:
            print(f"{r['id']}  {r['state']:<18} {r['project']:<16} {r['requester']:<12} "
                  f"{r['title']}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from ..airlock.service import AirlockService  # deferred: start-up time

    settings = _settings(args)
    service = AirlockService.from_settings(settings)
    try:
        done = service.purge(actor=f"cli:{getpass.getuser()}", dry_run=args.dry_run)
    finally:
        service.close()
    verb = "would purge" if args.dry_run else "purged"
    for plan in done:
        if args.json:
            print(json.dumps(plan, ensure_ascii=False))
        else:
            print(f"{verb} {plan['request_id']}  {plan['state']:<10} {plan['project']:<16} "
                  f"{len(plan['deleted'])} file(s) deleted, {len(plan['kept_shared'])} kept "
                  "(shared with another request)")
    if not args.json:
        print(f"{len(done)} request(s) {verb}")
    return 0


def cmd_verify_release(args: argparse.Namespace) -> int:
    """0: the package is as released; 1: it is not (each problem on a line); 2: unusable."""
    from ..airlock.release import audited_hashes, verify_package  # deferred: start-up time
    from ..audit import AuditLog  # deferred: start-up time

    settings = _settings(args)
    audit = AuditLog.from_settings(settings, writer=False)
    try:
        result = verify_package(args.package, lambda rid: audited_hashes(audit, rid))
    finally:
        audit.engine.dispose()
    if not result.request_id and result.problems:
        print(f"ecluse airlock verify-release: {result.problems[0]}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"{args.package}: request {result.request_id}, {result.files} file(s): as "
              f"released (record sha256 {result.record_sha256} is in the audit log)")
        return 0
    print(f"{args.package}: request {result.request_id}: NOT as released", file=sys.stderr)
    for p in result.problems:
        print(f"  {p}", file=sys.stderr)
    return 1
