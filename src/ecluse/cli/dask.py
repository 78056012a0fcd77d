"""``ecluse dask warehouse | env | gateway`` — the demo warehouse and Dask wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import load_settings
from ..dask.hub import gateway_client_env
from ..dask.sizing import dask_command_prefix, dask_env
from ..dev.warehouse import generate, seed_warehouse
from ..sandbox import sandbox_host_address


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dask", help="demo warehouse, Dask sizing, dask-gateway")
    dsub = p.add_subparsers(dest="dask_command", metavar="ACTION")
    dsub.required = True

    def add(name: str, help: str, func) -> argparse.ArgumentParser:
        a = dsub.add_parser(name, help=help)
        a.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or "
                       "config/ecluse.yaml)")
        a.set_defaults(func=func)
        return a

    wh = add("warehouse", "generate the demo warehouse datasets that are missing", cmd_warehouse)
    wh.add_argument("--size", choices=["small", "default", "full"], default=None,
                    help="default: $ECLUSE_DEMO_SIZE or 'default'")
    wh.add_argument("--force", action="store_true", help="regenerate existing datasets")
    env = add("env", "print the Dask environment of a project's workspaces", cmd_env)
    env.add_argument("project")
    gw = add("gateway", "run the dask-gateway server (what the hub service runs)", cmd_gateway)
    gw.add_argument("--prefix", default="", help="URL prefix, e.g. /services/dask-gateway")


def cmd_warehouse(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not args.force:
        written = seed_warehouse(settings, args.size)
    else:
        written = [Path(ds.path) for slug, p in settings.projects.items() for ds in p.datasets
                   if generate(slug, ds.name, Path(ds.path), args.size or "default",
                               force=True) is not None]
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("nothing to do (datasets exist, or no omop/exposure/cohort dataset configured)")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    project = settings.projects.get(args.project)
    if project is None:
        print(f"ecluse: no project named {args.project!r}")
        return 2
    env = {**dask_env(project), **gateway_client_env(settings, sandbox_host_address(settings, ensure=False))}
    print(json.dumps({"env": env, "command_prefix": dask_command_prefix(project)}, indent=2))
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from ..dask.gateway import main  # deferred: start-up time

    argv = ["--prefix", args.prefix]
    if args.config:
        argv += ["--config", args.config]
    return main(argv)
