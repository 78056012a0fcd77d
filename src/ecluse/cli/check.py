"""``ecluse check PATH... [--policy FILE | --project SLUG [--config FILE]] [--json] [--acro-json OUT]``.

Exit status: 0 when every file passes, 1 when any is fail/block/review,
2 on a usage error (missing path, bad policy file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..config import ConfigError, load_settings
from ..sdc.policy import DisclosurePolicy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check research outputs for disclosure risks",
        description="Judge each file: pass, fail (disclosive aggregate), block (row-level data) "
        "or review (cannot be judged automatically). Exit 0 when all pass, 1 otherwise.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to check")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--policy", metavar="FILE",
                     help="YAML file of disclosure policy values (DisclosurePolicy fields)")
    src.add_argument("--project", metavar="SLUG",
                     help="use this project's effective policy from the deployment config")
    p.add_argument("--config", metavar="FILE",
                   help="deployment config for --project (default: $ECLUSE_CONFIG or "
                   "config/ecluse.yaml)")
    p.add_argument("--json", action="store_true", help="print the machine-readable report")
    p.add_argument("--acro-json", metavar="OUT",
                   help="also write the results in ACRO's results.json format to OUT (a file, "
                   "or a folder to hold results.json), for SACRO-Viewer")
    p.add_argument("--fix", metavar="OUT",
                   help="write a version of the (one, CSV) table that passes to OUT: small "
                   "cells suppressed so that none can be recomputed, or rounded "
                   "(--fix-method); the fixed table is checked again")
    p.add_argument("--fix-method", choices=["suppress", "round"], default="suppress",
                   help="suppress (primary and secondary) or round to the policy's "
                   "rounding_base then suppress what is still small (default: suppress)")
    p.set_defaults(func=cmd_check)


def _policy(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.policy:
        path = Path(args.policy)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read the policy file: {e}") from None
        if isinstance(data, dict) and "disclosure" in data and isinstance(data["disclosure"], dict):
            data = data["disclosure"]
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of policy values")
        try:
            return DisclosurePolicy.model_validate(data)
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                             for err in e.errors())
            raise ConfigError(f"{path}: {msgs}") from None
    if args.project:
        settings = load_settings(args.config)
        if args.project not in settings.projects:
            raise ConfigError(f"{settings.config_file}: no project {args.project!r} "
                              f"(known: {', '.join(sorted(settings.projects)) or 'none'})")
        return settings.policy_for(args.project)
    if args.config:
        return load_settings(args.config).disclosure
    return DisclosurePolicy()


def cmd_check(args: argparse.Namespace) -> int:
    from ..sdc import check_paths  # deferred: start-up time

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"ecluse check: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    policy = _policy(args)
    if args.fix:
        return _fix(args, policy)
    report = check_paths(args.paths, policy)
    if args.acro_json:
        from ..sdc.acro import write_acro  # deferred: start-up time

        try:
            write_acro(report, Path(args.acro_json))
        except OSError as e:
            print(f"ecluse check: cannot write {args.acro_json}: {e.strerror or e}",
                  file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"files": [f.to_dict() for f in report.files]}, indent=2,
                         ensure_ascii=False, default=str))
    else:
        print(report.render())
    return 0 if report.verdict == "pass" else 1


def _fix(args: argparse.Namespace, policy) -> int:  # type: ignore[no-untyped-def]
    from ..sdc.report import render_text  # deferred: start-up time
    from ..sdc.suppress import CannotFix, fix_csv  # deferred: start-up time

    if len(args.paths) != 1 or Path(args.paths[0]).is_dir():
        print("ecluse check --fix: give exactly one table to fix", file=sys.stderr)
        return 2
    try:
        fix = fix_csv(args.paths[0], args.fix, policy, args.fix_method)
    except CannotFix as e:
        print(f"ecluse check --fix: {e}", file=sys.stderr)
        return 1
    assert fix.report is not None
    if args.json:
        print(json.dumps({"fix": fix.to_dict(), "files": [fix.report.to_dict()]}, indent=2,
                         ensure_ascii=False, default=str))
    else:
        print(f"wrote {args.fix} ({fix.method}):")
        for note in fix.notes:
            print(f"  - {note}")
        print(render_text([fix.report]))
    return 0 if fix.report.verdict == "pass" else 1
