"""``ecluse airlock import load | deliver | list``: staff-side imports on the airlock's host.

``load`` opens an import request for a project with host files (datasets too large to
upload), checks them in the quarantine and submits it: another person — staff or a data
owner of the project — approves it in the airlock. Run as root only (the platform's
administrators): anyone else is refused, audited. ``deliver`` copies approved imports the
service could not write (it runs as its own user) into ``/project/inbox``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(asub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    p = asub.add_parser("import", help="staff-side imports into a project's /project/inbox")
    isub = p.add_subparsers(dest="import_command", metavar="ACTION")
    isub.required = True
    ld = isub.add_parser("load", help="open, fill (checked in the quarantine) and submit an "
                         "import of host files; another person approves it")
    ld.add_argument("project")
    ld.add_argument("paths", nargs="+", type=Path, help="regular files (pack a folder as "
                    "a tar or zip archive)")
    ld.add_argument("--title", required=True)
    ld.add_argument("--justification", required=True,
                    help="why, and where the data comes from (agreement, source)")
    ld.add_argument("--code", action="store_true", help="a code import (executable content)")
    ld.add_argument("--as", dest="actor", help="the staff member recorded as the requester "
                    "(default: $SUDO_USER)")
    ld.set_defaults(func=cmd_load)
    dv = isub.add_parser("deliver", help="copy approved imports into their project's inbox")
    dv.add_argument("ids", nargs="*", help="import ids (default: every approved one)")
    dv.set_defaults(func=cmd_deliver)
    ls = isub.add_parser("list", help="list import requests")
    ls.add_argument("--state")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    return [p, ld, dv, ls]


def _ingress(args: argparse.Namespace):
    from ..airlock.ingress import IngressService  # deferred: start-up time
    from ..airlock.service import AirlockService  # deferred: start-up time
    from ..config import load_settings  # deferred: start-up time

    settings = load_settings(args.config, state_dir=args.state_dir)
    service = AirlockService.from_settings(settings)
    return service, IngressService.from_settings(settings, service)


def _refuse_unless_root(args: argparse.Namespace, what: str) -> str | None:
    if os.geteuid() == 0:
        return None
    import getpass

    who = getpass.getuser()
    try:
        service, _ = _ingress(args)
        from ..auditevents import AuditEvent  # deferred: start-up time

        service.audit.record(AuditEvent.AIRLOCK_IMPORT_DENIED, actor=who, project=getattr(
            args, "project", None), outcome="denied", action=what,
            reason="not run as root")
        service.close()
    except Exception:  # noqa: BLE001 - a non-root user may not even open the audit log
        pass
    return (f"ecluse airlock import {what}: refused: staff-side imports are run by the "
            f"platform's administrators as root on the airlock's host (you are {who}); "
            "researchers upload through the airlock's Imports page")


def cmd_load(args: argparse.Namespace) -> int:
    why = _refuse_unless_root(args, "load")
    if why:
        print(why, file=sys.stderr)
        return 2
    from ..airlock.errors import AirlockError  # deferred: start-up time

    service, ingress = _ingress(args)
    try:
        actor = args.actor or os.environ.get("SUDO_USER") or "root"
        staff = service.identity(actor, [service.settings.staff_group])
        r = ingress.create(staff, project=args.project, title=args.title,
                           justification=args.justification, code=args.code, source="load")
        refused = []
        for path in args.paths:
            f = ingress.add_path(staff, r["id"], path)
            print(f"{f['verdict']:<9} {f['kind']:<14} {f['sha256']}  {f['name']}")
            refused += f["reasons"]
        if refused:
            print(f"{r['id']}: not submitted, refused files:", *refused, sep="\n  ",
                  file=sys.stderr)
            return 1
        ingress.submit(staff, r["id"])
        print(f"{r['id']}: submitted; staff or a data owner of {args.project} (not {actor}) "
              "approves it in the airlock")
        return 0
    except AirlockError as e:
        print(f"ecluse airlock import load: {e}", file=sys.stderr)
        return 1
    finally:
        service.close()


def cmd_deliver(args: argparse.Namespace) -> int:
    why = _refuse_unless_root(args, "deliver")
    if why:
        print(why, file=sys.stderr)
        return 2
    service, ingress = _ingress(args)
    failed = 0
    try:
        for iid in args.ids or ingress.pending_delivery():
            try:
                print(f"{iid}: delivered to {ingress.deliver('ecluse-cli', iid)}")
            except Exception as e:  # noqa: BLE001 - report each and go on
                print(f"{iid}: not delivered: {e}", file=sys.stderr)
                failed += 1
    finally:
        service.close()
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    service, ingress = _ingress(args)
    try:
        staff = service.identity("ecluse-cli", [service.settings.staff_group])
        for r in ingress.list(staff, state=args.state):
            if args.json:
                print(json.dumps(r, ensure_ascii=False))
            else:
                print(f"{r['id']}  {r['state']:<10} {r['project']:<16} {r['requester']:<12} "
                      f"{'code' if r['code'] else 'data'}  {r['title']}")
    finally:
        service.close()
    return 0
