#!/usr/bin/env python3
"""ecluse-daemon: start and stop one Écluse service without systemd.

Installed by the ``ecluse`` Ansible role as ``<prefix>/bin/ecluse-daemon`` and
used when ``ecluse_service_manager: direct`` (containers and CI machines whose
PID 1 is not systemd). It runs the same command line, working directory and
environment files as the systemd unit, and mirrors two of its settings:

* ``EnvironmentFile=`` — ``--env-file`` (repeatable) is read the way systemd
  reads it (``KEY=VALUE`` lines, ``#`` comments, optional quotes);
* ``KillMode=process`` — ``stop`` signals the main process only, so
  workspaces started by the hub keep running across a hub restart.

What it does NOT do, unlike systemd: restart a crashed service, start services
at boot, limit resources, collect logs in the journal (output is appended to
``--log-file``). It is a fallback for tests and containers, not for hosts.

Commands (exit status 0 on success; ``start`` prints ``started`` or
``running``, which the Ansible tasks use to report a change or not)::

    ecluse-daemon start   --pidfile P --log-file L [--env-file E]... [--cwd D] -- CMD...
    ecluse-daemon stop    --pidfile P [--timeout S]
    ecluse-daemon restart --pidfile P --log-file L [--env-file E]... [--cwd D] -- CMD...
    ecluse-daemon status  --pidfile P
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a systemd EnvironmentFile: KEY=VALUE lines, comments, optional quotes."""
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process is alive and runs the recorded command."""
    try:
        lines = pidfile.read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    cmdline = _cmdline(pid)
    if not cmdline:
        return None
    expected = lines[1] if len(lines) > 1 else ""
    # a recycled pid runs something else: not ours
    if expected and expected not in " ".join(cmdline):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def start(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    pid = running_pid(pidfile)
    if pid:
        print(f"running pid {pid}")
        return 0
    if not args.command:
        print("ecluse-daemon: no command given after --", file=sys.stderr)
        return 2
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    for f in args.env_file:
        env.update(read_env_file(Path(f)))
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(args.log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # first child: new session, then fork again so init adopts the daemon
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        try:
            os.chdir(args.cwd or "/")
            os.umask(0o027)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            tmp = pidfile.with_suffix(".tmp")
            tmp.write_text(f"{os.getpid()}\n{args.match or args.command[0]}\n")
            os.replace(tmp, pidfile)
            os.write(write_end, b"ok")
            os.close(write_end)
            os.execvpe(args.command[0], args.command, env)
        except BaseException as e:  # report to the parent, never return into its code
            try:
                os.write(write_end, f"error: {e}".encode())
            finally:
                os._exit(127)
    os.close(write_end)
    os.waitpid(child, 0)
    status = os.read(read_end, 4096).decode()
    os.close(read_end)
    if status != "ok":
        print(f"ecluse-daemon: cannot start {args.command[0]}: {status}", file=sys.stderr)
        return 1
    # a service that dies at once (bad config) is a failed start, as with systemd
    time.sleep(args.settle)
    pid = running_pid(pidfile)
    if not pid:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        print(f"ecluse-daemon: {args.command[0]} exited at once; log tail:\n{tail}",
              file=sys.stderr)
        return 1
    print(f"started pid {pid}")
    return 0


def stop(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    pid = running_pid(pidfile)
    if not pid:
        pidfile.unlink(missing_ok=True)
        print("stopped")
        return 0
    os.kill(pid, signal.SIGTERM)  # main process only (KillMode=process)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and running_pid(pidfile):
        time.sleep(0.2)
    if running_pid(pidfile):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    pidfile.unlink(missing_ok=True)
    print(f"stopped pid {pid}")
    return 0


def status(args: argparse.Namespace) -> int:
    pid = running_pid(Path(args.pidfile))
    print(f"running pid {pid}" if pid else "stopped")
    return 0 if pid else 3  # LSB: 3 = not running


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ecluse-daemon", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop", "restart", "status"])
    p.add_argument("--pidfile", required=True)
    p.add_argument("--log-file", default="/dev/null")
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("--cwd")
    p.add_argument("--match", help="what the running process's command line holds (default: "
                   "the command; e.g. the program a `setpriv … --` prefix or a wrapper execs)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL on stop")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds a started service must stay up to count as started")
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after the first -- is the service's command line
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1:]
    args = p.parse_args(argv)
    args.command = command
    if args.action == "start":
        return start(args)
    if args.action == "stop":
        return stop(args)
    if args.action == "restart":
        stop(args)
        return start(args)
    return status(args)


if __name__ == "__main__":
    sys.exit(main())
