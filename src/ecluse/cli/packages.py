"""``ecluse packages allow|list|revoke``: a project's allow-list on the package mirror,
and ``ecluse mirror serve`` (the mirror itself, as the hub runs it)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from ..auditevents import AuditEvent
from ..config import load_settings
from ..mirror.allowlist import (
    AllowList,
    AllowListError,
    ResolveError,
    allow,
    normalize,
    parse_requirement,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("packages", help="the packages a project's workspaces may install "
                       "from the package mirror (allow-lists, audited)")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (overrides the config)")
    psub = p.add_subparsers(dest="packages_command", metavar="ACTION")
    psub.required = True
    a = psub.add_parser("allow", help="allow NAME[==VERSION] with its dependency closure, "
                        "resolved against the upstream index and pinned now")
    a.add_argument("project")
    a.add_argument("requirement", metavar="NAME[==VERSION]")
    a.add_argument("--python", help="the interpreter whose platform the closure is resolved "
                   "for (default: this one, the workspaces' on the local backend)")
    a.set_defaults(func=cmd_allow)
    ls = psub.add_parser("list", help="a project's allowed packages and their pinned closures")
    ls.add_argument("project")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    r = psub.add_parser("revoke", help="take a package (and its closure) off a project's list")
    r.add_argument("project")
    r.add_argument("name")
    r.set_defaults(func=cmd_revoke)

    m = sub.add_parser("mirror", help="the package mirror service (run by the hub)")
    m.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    m.add_argument("--state-dir", help="state directory (overrides the config)")
    msub = m.add_subparsers(dest="mirror_command", metavar="ACTION")
    msub.required = True
    s = msub.add_parser("serve", help="run the backend and the filtering front")
    s.add_argument("--listen", help="HOST:PORT of the front (default: the sandbox host "
                   "address and mirror.port)")
    s.set_defaults(func=cmd_serve)


def _project(settings, slug: str) -> str | None:
    if slug not in settings.projects:
        print(f"ecluse packages: no project {slug!r}; known: {', '.join(settings.projects)}",
              file=sys.stderr)
        return None
    return slug


def _audit(settings):
    # deferred: start-up time (SQLAlchemy)
    from ..audit import AuditLog

    return AuditLog.from_settings(settings)


def cmd_allow(args: argparse.Namespace) -> int:
    # deferred: start-up time (aiohttp and the sandbox layer)
    from ..mirror.serve import mirror_settings

    settings = load_settings(args.config, state_dir=args.state_dir)
    if not _project(settings, args.project):
        return 2
    conf = mirror_settings(settings)
    actor = f"cli:{getpass.getuser()}"
    try:
        parse_requirement(args.requirement)
    except AllowListError as e:
        print(f"ecluse packages: {e}", file=sys.stderr)
        return 2
    audit = _audit(settings)
    try:
        done = allow(conf.resolved_data_dir(settings.state_dir), args.project,
                     args.requirement, upstream=conf.upstream, actor=actor,
                     binary_only=conf.binary_only, python=args.python)
    except (ResolveError, AllowListError) as e:
        audit.record(AuditEvent.MIRROR_PACKAGE_ALLOWED, actor=actor, project=args.project,
                     outcome="failure", requirement=args.requirement, error=str(e))
        print(f"ecluse packages: {e}", file=sys.stderr)
        return 1
    audit.record(AuditEvent.MIRROR_PACKAGE_ALLOWED, actor=actor, project=args.project,
                 requirement=done.requirement, package=done.name, version=done.version,
                 closure=done.closure, upstream=conf.upstream)
    pins = ", ".join(f"{n}=={v}" for n, v in sorted(done.closure.items()))
    print(f"allowed {done.name}=={done.version} for {args.project}: {pins}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    # deferred: start-up time (aiohttp and the sandbox layer)
    from ..mirror.serve import mirror_settings

    settings = load_settings(args.config, state_dir=args.state_dir)
    if not _project(settings, args.project):
        return 2
    lst = AllowList(mirror_settings(settings).resolved_data_dir(settings.state_dir),
                    args.project)
    packages = lst.packages()
    if args.json:
        print(json.dumps({n: a.to_dict() for n, a in sorted(packages.items())}, indent=2))
        return 0
    if not packages:
        print(f"project {args.project}: no package allowed")
    for name, a in sorted(packages.items()):
        deps = ", ".join(f"{n}=={v}" for n, v in sorted(a.closure.items()) if n != name)
        print(f"{name}=={a.version}  (allowed by {a.by} at {a.at}; with: {deps or 'nothing'})")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    # deferred: start-up time (aiohttp and the sandbox layer)
    from ..mirror.serve import mirror_settings

    settings = load_settings(args.config, state_dir=args.state_dir)
    if not _project(settings, args.project):
        return 2
    lst = AllowList(mirror_settings(settings).resolved_data_dir(settings.state_dir),
                    args.project)
    try:
        gone = lst.revoke(args.name)
    except AllowListError as e:
        print(f"ecluse packages: {e}", file=sys.stderr)
        return 1
    _audit(settings).record(AuditEvent.MIRROR_PACKAGE_REVOKED, actor=f"cli:{getpass.getuser()}",
                            project=args.project, package=normalize(args.name),
                            version=gone.version, closure=gone.closure)
    print(f"revoked {gone.name}=={gone.version} for {args.project}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # deferred: start-up time (aiohttp and the sandbox layer)
    from ..mirror.serve import serve

    settings = load_settings(args.config, state_dir=args.state_dir)
    return serve(settings, listen=args.listen)
