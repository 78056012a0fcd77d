"""``ecluse up``: install-time secrets, embedded LDAP, JupyterHub and proxy (and, with
``--sandbox docker``, a Docker engine and the workspace image)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..audit import AuditLog
from ..config import load_settings
from ..dev.serviceusers import DEFAULT_USERS, give_hub_files
from ..dev.stack import Stack
from ..dev.supervisor import Supervisor, SupervisorGaveUp, run_in_keeper


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
            help=f"system user the {service} runs as when started as root (created "
            f"if missing; default {user}; '' to keep it root's)",
        )
    p.set_defaults(func=cmd_up)
    p = sub.add_parser(
        "service", help="run one of the hub's services as an external service of a hub "
        "that runs as its own user (hub.service_user; a systemd unit's ExecStart)")
    p.add_argument("name", help="airlock, batch, dask-gateway or package-mirror")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--token-file", help="the service's API token, as the hub knows it "
                   "(default: $CREDENTIALS_DIRECTORY/token, systemd's LoadCredential=)")
    p.set_defaults(func=cmd_service)
    p = sub.add_parser(
        "hub-prepare", help="as root, before a hub of its own user (hub.service_user) "
        "starts: mount the state volume, give the hub its files and the services their "
        "folders (a root systemd unit ordered before the hub's)")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.set_defaults(func=cmd_hub_prepare)


def cmd_hub_prepare(args: argparse.Namespace) -> int:
    from ..hub.prepare import prepare  # deferred: the hub's modules

    settings = load_settings(args.config)
    try:
        prepare(settings)
    except (PermissionError, ValueError) as e:
        print(f"ecluse hub-prepare: {e}", file=sys.stderr)
        return 2
    print(f"the hub's files ready for {settings.hub.service_user} in {settings.hub_dir}")
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    """Replace this process by the service, in the environment the hub would give it,
    marked as the supervisor's (``ECLUSE_SUPERVISED_SERVICE_OF``). Never as root when the
    service has a user of its own: root (the direct service manager) reads the token, then
    becomes that user; a systemd unit runs it as that user already (``User=``)."""
    import os
    import pwd
    from pathlib import Path

    from ..hub.services import external_service  # deferred: the hub's modules
    from ..hubservice import instances  # deferred: with the hub's modules

    settings = load_settings(args.config)
    token_file = args.token_file or (
        Path(os.environ["CREDENTIALS_DIRECTORY"]) / "token"
        if os.environ.get("CREDENTIALS_DIRECTORY") else None)
    if token_file is None:
        print("ecluse service: no token (--token-file, or systemd's LoadCredential=token:…)",
              file=sys.stderr)
        return 2
    token = Path(token_file).read_text().strip()
    svc = external_service(settings, args.name, token)
    env = {**svc.env, instances.SUPERVISED_MARK: str(Path(settings.state_dir).resolve())}
    if svc.user and os.geteuid() == 0:
        user = pwd.getpwnam(svc.user)
        os.setgroups(os.getgrouplist(svc.user, user.pw_gid))
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        if os.geteuid() == 0 or os.getuid() == 0:  # never as root
            print(f"ecluse service: cannot become {svc.user}", file=sys.stderr)
            return 2
    elif svc.user and pwd.getpwuid(os.geteuid()).pw_name != svc.user:
        print(f"ecluse service: the {args.name} service runs as {svc.user}, not as "
              f"{pwd.getpwuid(os.geteuid()).pw_name} (systemd: User={svc.user})",
              file=sys.stderr)
        return 2
    os.chdir(svc.cwd)
    os.execvpe(svc.command[0], svc.command, env)
    return 1  # pragma: no cover - exec does not return


def cmd_up(args: argparse.Namespace) -> int:
    """The stack, run by a keeper process that stops it in order even when this one is
    killed (:func:`ecluse.dev.supervisor.run_in_keeper`)."""
    return run_in_keeper(lambda: _up(args))


def _up(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, state_dir=args.state_dir, port=args.port)
    users = {s: getattr(args, f"{s}_user", user) or None for s, user in DEFAULT_USERS.items()}
    stack = Stack(settings, cleanup_servers=not args.keep_servers, die_with_parent=True,
                  service_users=users, sandbox=args.sandbox,
                  progress=lambda msg: print(msg, flush=True))
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
        if settings.hub.service_user:  # what the migration (root) wrote is the hub's again
            give_hub_files(settings, settings.hub.service_user)
        stack.start_launcher()
        stack.start_hub(timeout=settings.sandbox.start_timeout)
        stack.start_services()  # the hub runs as its own user: the stack starts them
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
