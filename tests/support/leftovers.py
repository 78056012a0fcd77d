"""What a test session started and left running: found, reported, killed.

A harness registers the folders of what it starts (:func:`register`: a stack's
state folder, its configuration folder). A process is this session's when it
descends from the pytest process, or names a registered folder on its command
line, or carries one in its environment: the hub's (``ECLUSE_STATE_DIR``,
``ECLUSE_CONFIG``; the proxy and the route filter inherit it) or a
hub-managed service's mark (``ECLUSE_SERVICE_OF``). The hub starts those in
sessions of their own: once the hub is gone they are nobody's children, and
only their environment says whose they are. Other sessions on the same machine
register other folders; their processes are not ours to report.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil

from ecluse.hub.hubconfig import ENV_CONFIG, ENV_STATE_DIR
from ecluse.hubservice.instances import MARK

#: folders of what this session's harnesses started (resolved)
PATHS: list[str] = []
#: environment variables naming the deployment a process belongs to
ENV_KEYS = (ENV_STATE_DIR, ENV_CONFIG, MARK)
#: the interpreter's own helpers: they exit with pytest itself
IGNORED = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def register(*paths: str | os.PathLike[str]) -> None:
    """Processes naming ``paths`` (or anything under them) are this session's."""
    for p in paths:
        resolved = str(Path(p).resolve())
        if resolved not in PATHS:
            PATHS.append(resolved)


def _under(value: str, paths: list[str]) -> bool:
    return any(value == p or value.startswith(p + "/") for p in paths)


def is_ours(proc: psutil.Process, paths: list[str], me: int | None) -> bool:
    """Whether ``proc`` is a descendant of ``me`` (if given) or names one of ``paths``."""
    try:
        cmd = proc.cmdline()
        if any(helper in " ".join(cmd) for helper in IGNORED):
            return False
        if me is not None and any(p.pid == me for p in proc.parents()):
            return True
        words = [w for arg in cmd for w in re.split(r"[=\s,:]", arg)]
        if any(_under(w.rstrip("/"), paths) for w in words if w.startswith("/")):
            return True
        env = proc.environ()
    except (psutil.Error, OSError):
        return False
    return any(_under(str(Path(env[k]).resolve()), paths) for k in ENV_KEYS if env.get(k))


def leftover_processes(paths: list[str] | None = None, *,
                       descendants: bool = True) -> list[psutil.Process]:
    """Live processes of this session (see the module docstring), pytest excluded;
    with ``descendants`` False, only those naming ``paths``."""
    me = os.getpid()
    paths = list(PATHS if paths is None else paths)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if is_ours(proc, paths, me if descendants else None):
            found.append(proc)
    return found


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def kill(procs: list[psutil.Process], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, for what is still alive."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


def settle(paths: list[str] | None = None, wait: float = 2.0, *,
           descendants: bool = True) -> list[psutil.Process]:
    """The leftovers still alive after ``wait`` seconds (exiting processes are reaped)."""
    left = leftover_processes(paths, descendants=descendants)
    deadline = time.monotonic() + wait
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_processes(paths, descendants=descendants)
    return left
