"""``ecluse batch run | list | show | logs | share | cancel | export | serve``.

Every client command talks to the batch service's REST API with a hub token
(``--token`` or ``$JUPYTERHUB_API_TOKEN``), so it goes through the same
authentication, staff check, queue and audit as any other client, from any
host; ``serve`` runs the service (started by the hub as a managed service).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ..batch.client import ApiError, BatchClient, default_url, resolve_value
from ..config import ConfigError, load_settings
from ..settings.batch import batch_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="batch notebook runs (papermill) in project sandboxes")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    common.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS,
                        help="state directory (overrides the config)")
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--url", default=argparse.SUPPRESS,
                        help="batch service URL (default: $ECLUSE_BATCH_URL, else the "
                        "service's address in the config)")
    client.add_argument("--token", default=argparse.SUPPRESS,
                        help="hub API token (default: $JUPYTERHUB_API_TOKEN)")
    client.add_argument("--json", action="store_true", help="print JSON")
    bsub = p.add_subparsers(dest="batch_command", metavar="ACTION")
    bsub.required = True

    r = bsub.add_parser("run", parents=[client], help="queue a notebook run and follow it")
    r.add_argument("notebook", help="the .ipynb file to run")
    r.add_argument("--project", required=True, help="project slug")
    r.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a notebook parameter (repeatable)")
    r.add_argument("--as-user", help="project member the run executes as (default: you)")
    r.add_argument("--timeout", type=float, help="seconds before the run is stopped")
    r.add_argument("--detach", action="store_true", help="queue it and return")
    r.set_defaults(func=cmd_run)

    ls = bsub.add_parser("list", parents=[client], help="recent runs")
    ls.add_argument("--project")
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)

    for name, func, text in (("show", cmd_show, "one run, with its progress"),
                             ("logs", cmd_logs, "the run's log with the cell outputs (project "
                              "data: members, or staff once a member shared the run)"),
                             ("share", cmd_share, "as a project member: let platform staff "
                              "read the run's log and files"),
                             ("cancel", cmd_cancel, "cancel a queued run or stop a running one")):
        q = bsub.add_parser(name, parents=[client], help=text)
        q.add_argument("run", help="run id (br-...)")
        q.set_defaults(func=func)

    e = bsub.add_parser("export", parents=[client],
                        help="put a finished run's outputs into an airlock request")
    e.add_argument("run", help="run id (br-...)")
    e.add_argument("--title", required=True)
    e.add_argument("--justification", help="why (default: the run's notebook, sha256, "
                   "parameters)")
    e.add_argument("--file", dest="files", action="append",
                   help="a file of the run folder (repeatable; default: every output)")
    e.add_argument("--draft", action="store_true", help="leave the request as a draft")
    e.add_argument("--context", action="append", default=[], metavar="FILE=TEXT",
                   help="what FILE is, for the checkers (repeatable; needed to submit a "
                   "file that fails its checks or that they cannot judge)")
    e.add_argument("--controls", action="append", default=[], metavar="FILE=TEXT",
                   help="the statistical controls applied to FILE (repeatable; needed with "
                   "--context)")
    e.add_argument("--supporting", action="append", default=[], metavar="FILE",
                   help="FILE is a supporting file: the checkers see it, it is never "
                   "released (repeatable)")
    e.set_defaults(func=cmd_export)

    s = bsub.add_parser("serve", parents=[common],
                        help="run the service (started by the hub as a managed service)")
    s.set_defaults(func=cmd_serve)


def _settings(args: argparse.Namespace) -> Any:
    return load_settings(getattr(args, "config", None), state_dir=getattr(args, "state_dir", None))


def _client(args: argparse.Namespace) -> Any:
    url = getattr(args, "url", None)
    if not url:
        url = os.environ.get("ECLUSE_BATCH_URL") or default_url(_settings(args))
    token = getattr(args, "token", None) or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        raise SystemExit("ecluse batch: no token: pass --token or set JUPYTERHUB_API_TOKEN "
                         "(a hub API token of a staff member)")
    return BatchClient(url, token)


def _api(fn: Any) -> Any:
    """Run a client call; API errors become a message and exit status 1."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ApiError as e:
            print(f"ecluse batch: {e.message}" + (f" (HTTP {e.status})" if e.status else ""),
                  file=sys.stderr)
            return 1

    return wrapped


def _line(run: dict[str, Any]) -> str:
    p = run["progress"]
    cells = f"{p['cells_done']}/{p['cells_total']}" if p["cells_total"] else "-"
    return (f"{run['id']}  {run['status']:<10} {run['project']:<14} {run['run_as']:<10} "
            f"{cells:>7}  {run['notebook']}  (by {run['submitted_by']}, {run['created_at']})")


def progress_bar(run: dict[str, Any], width: int = 30) -> str:
    p = run["progress"]
    frac = p["fraction"] if not (run["status"] == "succeeded") else 1.0
    filled = int(round(frac * width))
    cells = f"{p['cells_done']}/{p['cells_total']} cells" if p["cells_total"] else "starting"
    return f"{run['id']} [{'#' * filled}{'.' * (width - filled)}] {cells}  {run['status']}"


def _describe(run: dict[str, Any]) -> str:
    lines = [_line(run), f"  output folder: {run['output_dir']}",
             f"  notebook sha256: {run['notebook_sha256']}",
             f"  parameters: {json.dumps(run['parameters'], ensure_ascii=False)}"]
    if run.get("failed_cell") is not None:
        lines.append(f"  failing cell: {run['failed_cell']}")
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    if run.get("exit_code") is not None:
        lines.append(f"  exit code: {run['exit_code']}")
    if run.get("shared_by"):
        lines.append(f"  log and files shared with staff by {run['shared_by']} "
                     f"({run['shared_at']})")
    return "\n".join(lines)


@_api
def cmd_run(args: argparse.Namespace) -> int:
    client = _client(args)
    params = {name: resolve_value(value) for name, value in args.parameter}
    try:
        run = client.submit(args.project, args.notebook, params, args.as_user, args.timeout)
    except (OSError, ValueError) as e:
        print(f"ecluse batch: cannot read {args.notebook}: {e}", file=sys.stderr)
        return 2
    if args.detach:
        print(json.dumps(run) if args.json else run["id"])
        return 0
    tty = sys.stderr.isatty()
    last = [""]

    def show(r: dict[str, Any]) -> None:
        bar = progress_bar(r)
        if bar != last[0]:
            print(("\r" + bar) if tty else bar, end="" if tty else "\n", file=sys.stderr,
                  flush=True)
            last[0] = bar

    run = client.wait(run["id"], show)
    if tty:
        print(file=sys.stderr)
    print(json.dumps(run) if args.json else _describe(run))
    return 0 if run["status"] == "succeeded" else 1


@_api
def cmd_list(args: argparse.Namespace) -> int:
    runs = _client(args).list(args.project, args.status, args.limit)
    for r in runs:
        print(json.dumps(r) if args.json else _line(r))
    return 0


@_api
def cmd_show(args: argparse.Namespace) -> int:
    run = _client(args).show(args.run)
    print(json.dumps(run) if args.json else _describe(run) + "\n  " + progress_bar(run))
    return 0


@_api
def cmd_logs(args: argparse.Namespace) -> int:
    sys.stdout.write(_client(args).logs(args.run))
    return 0


@_api
def cmd_share(args: argparse.Namespace) -> int:
    run = _client(args).share(args.run)
    print(json.dumps(run) if args.json else f"{run['id']}  shared with platform staff "
          f"(by {run['shared_by']}, {run['shared_at']})")
    return 0


@_api
def cmd_cancel(args: argparse.Namespace) -> int:
    run = _client(args).cancel(args.run)
    print(json.dumps(run) if args.json else _line(run))
    return 0


@_api
def cmd_export(args: argparse.Namespace) -> int:
    about: dict[str, dict[str, Any]] = {}
    for key in ("context", "controls"):
        for item in getattr(args, key):
            name, sep, text = item.partition("=")
            if not sep or not name:
                raise SystemExit(f"ecluse batch export: --{key} {item!r}: expected FILE=TEXT")
            about.setdefault(name, {})[key] = text
    for name in args.supporting:
        about.setdefault(name, {})["supporting"] = True
    req = _client(args).export(args.run, args.title, args.justification, args.files,
                               submit=not args.draft, about=about)
    if args.json:
        print(json.dumps(req))
    else:
        names = ", ".join(f"{f['name']} ({f['verdict']}"
                          + (", supporting" if f.get("supporting") else "") + ")"
                          for f in req.get("files", []))
        print(f"{req['id']}  {req['state']}  {req['project']}  {req['title']}\n  files: {names}")
        if req.get("submit_refused"):
            print(f"  not submitted: {req['submit_refused']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..airlock.web.app import bind_address  # deferred: start-up time
    from ..batch.service import BatchService  # deferred: start-up time
    from ..batch.web import serve  # deferred: start-up time

    settings = _settings(args)
    try:  # every run identity is looked up in the directory: without it, do not start
        settings.ldap.bind_password()
    except ConfigError as e:
        print(f"ecluse batch serve: {e} (the hub passes the environment it has: "
              "ecluse.hubservice.service_environment)", file=sys.stderr)
        return 2
    conf = batch_settings(settings)
    ip, port = bind_address(conf.ip, conf.port)
    asyncio.run(serve(BatchService.from_settings(settings), ip=ip, port=port))
    return 0
