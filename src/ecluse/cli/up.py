"""``ecluse up``: install-time secrets, embedded LDAP, JupyterHub and proxy (and, with
``--sandbox docker``, a Docker engine and the workspace image)."""

from __future__ import annotations

import argparse
import signal
import threading

from ..audit import AuditLog
from ..config import load_settings
from ..dev.serviceusers import DEFAULT_USERS
from ..dev.stack import Stack
from ..dev.supervisor import Supervisor, SupervisorGaveUp


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the embedded stack (LDAP, hub, proxy, services)")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (default: from the config, .ecluse/)")
    p.add_argument("--port", type=int, help="public port of the proxy (default 8000)")
    p.add_argument(
        "--sandbox", choices=("local", "docker"),
        help="workspace backend (default: sandbox.backend of the config); docker starts "
        "a Docker engine of its own unless sandbox.docker_url is set, and builds the "
        "workspace image on first use")
    p.add_argument(
        "--keep-servers",
        action="store_true",
        help="leave workspaces running when the stack stops (re-adopted at next start)",
    )
    for service, user in DEFAULT_USERS.items():
        p.add_argument(
            f"--{service}-user", default=user, metavar="NAME",
            help=f"system user the {service} service runs as when started as root (created "
            f"if missing; default {user}; '' to keep it root's)",
        )
    p.set_defaults(func=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, state_dir=args.state_dir, port=args.port)
    stack = Stack(settings, cleanup_servers=not args.keep_servers, die_with_parent=True,
                  airlock_user=getattr(args, "airlock_user", DEFAULT_USERS["airlock"]) or None,
                  dask_user=getattr(args, "dask_user", DEFAULT_USERS["dask"]) or None,
                  batch_user=getattr(args, "batch_user", DEFAULT_USERS["batch"]) or None,
                  mirror_user=getattr(args, "mirror_user", DEFAULT_USERS["mirror"]) or None,
                  sandbox=args.sandbox, progress=lambda msg: print(msg, flush=True))
    stopping = threading.Event()

    def _stop(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    audit = None
    try:
        stack.prepare()
        print(f"Audit keys: {settings.audit.key_dir}; signed audit checkpoints: "
              f"{settings.audit.checkpoint_file if settings.audit.checkpoint_sink == 'file' else 'syslog'}"
              " (back both up, apart from the state directory)")
        stack.start_ldap()
        if stack.demo_passwords:
            print("\nDemo users (shown once; also in "
                  f"{stack.demo_users_file}, mode 0600):")
            for user, entry in stack.demo_passwords.items():
                print(f"  {user:<6} {entry['password']}")
            print("Second factor: add each user's \"totp\" key from that file to an "
                  "authenticator app, or print the current code with "
                  "`ecluse dev totp alice`.\n")
        elif settings.ldap.embedded:
            print(f"Demo users' passwords and TOTP keys: {stack.demo_users_file} "
                  "(current code: `ecluse dev totp alice`)")
        stack.start_sandbox_backend()
        stack.prepare_service_users()
        stack.cleanup_sandboxes()
        _migrate_identities(settings)
        stack.start_launcher()
        stack.start_hub(timeout=settings.sandbox.start_timeout)
        print(f"\nÉcluse is up: {settings.hub.public_url}  (Ctrl-C to stop)\n", flush=True)
        # a component that dies is restarted (with back-off, logged, audited)
        audit = AuditLog.from_settings(settings)
        supervisor = Supervisor(stack.supervised(), audit=audit)
        while not stopping.wait(0.5):
            try:
                supervisor.poll()
            except SupervisorGaveUp as e:
                print(f"ecluse up: {e}", flush=True)
                return 1
    finally:
        print("Stopping Écluse...", flush=True)
        if audit is not None:  # its connection (a restart recorded) keeps the volume busy
            audit.engine.dispose()
        stack.stop()
    return 0


def _migrate_identities(settings) -> None:
    """Once per state directory, before the hub starts: names from before canonical
    hub names mapped to one person (``ecluse migrate identities``)."""
    from ..identities import MigrationError, run_once  # deferred: start-up time

    try:
        report = run_once(settings)
    except MigrationError as e:
        print(f"Identity migration not done: {e}\n  (run `ecluse migrate identities` "
              "before the hub serves reviewers)", flush=True)
        return
    if report is not None and report.changed:
        print("Identity migration:\n  " + "\n  ".join(report.lines()), flush=True)
