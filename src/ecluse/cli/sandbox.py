"""``ecluse sandbox list | stop | cleanup | network | launcher`` — local sandboxes."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from ..config import load_settings
from ..sandbox import SandboxError
from ..sandbox.launcher import serve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sandbox", help="list and clean up local sandboxes")
    ssub = p.add_subparsers(dest="sandbox_command", metavar="ACTION")
    ssub.required = True

    def add(name: str, help: str, func) -> argparse.ArgumentParser:
        a = ssub.add_parser(name, help=help)
        a.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or "
                       "config/ecluse.yaml)")
        a.add_argument("--runtime-dir", default="/run/ecluse", help="default /run/ecluse")
        a.set_defaults(func=func)
        return a

    lst = add("list", "list the sandboxes of this host", cmd_list)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    stop = add("stop", "stop a sandbox by id", cmd_stop)
    stop.add_argument("id")
    stop.add_argument("--grace", type=float, default=None, help="seconds before SIGKILL")
    clean = add("cleanup", "remove dead sandboxes and stray namespaces, veths, cgroups",
                cmd_cleanup)
    clean.add_argument("--min-age", type=float, default=60.0,
                       help="leave sandboxes younger than this (seconds) that are starting")
    net = add("network", "create (or with --remove, remove) the host interface and "
              "firewall table", cmd_network)
    net.add_argument("--remove", action="store_true")
    net.add_argument("--force", action="store_true", help="remove even if sandboxes run")
    add("launcher", "run the privileged sandbox launcher (root) on sandbox.launcher_socket",
        cmd_launcher)


def _backend(args: argparse.Namespace):
    from ..sandbox.local import LocalSandbox  # deferred: start-up time

    try:
        settings = load_settings(args.config)
    except Exception:
        if args.sandbox_command in ("list", "cleanup", "stop"):
            settings = None  # these work from the runtime registry alone
        else:
            raise
    return LocalSandbox(settings=settings, runtime_dir=args.runtime_dir)


def cmd_list(args: argparse.Namespace) -> int:
    rows = _backend(args).list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':13} {'PROJECT':20} {'USER':12} {'IP':15} {'PORT':5} {'AGE':>7}  STATE")
    for m in rows:
        age = time.time() - m.get("created", time.time())
        print(f"{m['id']:13} {m.get('project', '?'):20} {m.get('user', '?'):12} "
              f"{m.get('ip', '?'):15} {str(m.get('port') or '-'):5} {age:7.0f}  "
              f"{'running' if m.get('alive') else 'dead (' + m.get('phase', '?') + ')'}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    sb = _backend(args)
    for m in sb.list():
        if m["id"] == args.id:
            grace = args.grace if args.grace is not None else (
                sb.settings.sandbox.stop_grace if sb.settings else 10.0)
            asyncio.run(sb.stop(m, grace=grace))
            print(f"stopped {args.id}")
            return 0
    print(f"no sandbox {args.id}")
    return 1


def cmd_cleanup(args: argparse.Namespace) -> int:
    removed = asyncio.run(_backend(args).cleanup_orphans(min_age=args.min_age))
    for sid in removed:
        print(f"removed {sid}")
    print(f"{len(removed)} removed")
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    from ..sandbox.local import (  # deferred: start-up time
        ensure_host_network,
        teardown_host_network,
    )

    if args.remove:
        if teardown_host_network(args.runtime_dir, force=args.force):
            print("removed interface ecluse0 and table inet ecluse")
            return 0
        print("sandboxes are running: not removed (use --force)")
        return 1
    settings = load_settings(args.config)
    print(ensure_host_network(settings, args.runtime_dir))
    return 0


def cmd_launcher(args: argparse.Namespace) -> int:
    """Serve until SIGTERM: the services start their sandboxes through it."""
    settings = load_settings(args.config)
    if not settings.sandbox.launcher_socket:
        print("ecluse sandbox launcher: sandbox.launcher_socket is not set in the config")
        return 2
    try:
        asyncio.run(serve(settings))
    except SandboxError as e:
        print(f"ecluse sandbox launcher: {e}")
        return 2
    return 0
