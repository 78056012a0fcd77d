"""``ecluse dev``: helpers of the embedded (demo) stack.

``ecluse dev totp alice`` prints the current TOTP code of a demo user, from
the secret in ``<state_dir>/demo-users.json`` — what an authenticator app
would show.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..config import load_settings
from ..dev.demo import read_demo_users
from ..hub.mfa import STEP, code_at, counter_at


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="helpers of the embedded demo stack")
    dev = p.add_subparsers(dest="dev_command", metavar="DEV_COMMAND")
    dev.required = True
    t = dev.add_parser("totp", help="print a demo user's current sign-in code")
    t.add_argument("user", help="demo user (alice, bob, carol, dan, erin)")
    t.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    t.add_argument("--state-dir", help="state directory (default: from the config, .ecluse/)")
    t.set_defaults(func=cmd_totp)


def cmd_totp(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, state_dir=args.state_dir)
    path = settings.state_dir / "demo-users.json"
    try:
        users = read_demo_users(path)
    except FileNotFoundError:
        print(f"ecluse: {path} does not exist: start the demo stack once (make up)",
              file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"ecluse: {e}", file=sys.stderr)
        return 2
    if args.user not in users:
        print(f"ecluse: {args.user} is not a demo user ({', '.join(sorted(users))})",
              file=sys.stderr)
        return 2
    now = time.time()
    print(code_at(users[args.user]["totp"], counter_at(now)))
    print(f"(valid for {int(STEP - now % STEP)} more seconds)", file=sys.stderr)
    return 0
