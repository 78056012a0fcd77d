"""Earlier instances of the hub's services: found by a mark, stopped before a start.

A hub that is killed (``SIGKILL``, an out-of-memory kill, a unit restarted with
``KillMode=process``) leaves the services it started running: they hold their
ports, and the next hub's services fail with "Address already in use" while the
orphans keep serving. Every service the hub starts carries :data:`MARK` (the
deployment's state folder) in its environment (``hubconfig.configure``); its
children inherit it (the gateway's proxy), sandboxes do not (they get an
environment of their own). Before the hub starts its services it stops every
process with the mark (:func:`stop_previous`), and a service that the hub
restarts after a crash stops what its previous instance left (its own name
only). Never two copies of a service.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auditevents import AuditEvent

log = logging.getLogger(__name__)

#: environment variable marking a hub-managed service of one deployment (its state folder)
MARK = "ECLUSE_SERVICE_OF"
#: the same mark on a service the supervisor starts (``hub.service_user``: ``ecluse up``
#: runs the services, not the hub); a hub never stops these, the supervisor does
SUPERVISED_MARK = "ECLUSE_SUPERVISED_SERVICE_OF"
#: set by JupyterHub in every managed service's environment
NAME_VAR = "JUPYTERHUB_SERVICE_NAME"


@dataclass(frozen=True)
class Instance:
    pid: int
    service: str
    cmdline: str
    ppid: int = 0

    def describe(self) -> str:
        return f"{self.service} (pid {self.pid}: {self.cmdline[:120]})"


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def in_sandbox(pid: int, parent: str = "ecluse") -> bool:
    """Whether ``pid`` is in a sandbox's cgroup (``<parent>/<id>``): a workspace, a run,
    a check, never a service's process, whatever its environment says."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    return any(f"/{parent}/" in line.partition(":")[2].partition(":")[2] + "/"
               for line in lines)


def find(state_dir: str | os.PathLike[str], service: str | None = None,
         exclude: set[int] | None = None, mark_var: str = MARK) -> list[Instance]:
    """Processes marked (``mark_var``) as services of ``state_dir`` (of ``service``
    only, if given)."""
    mark = str(Path(state_dir).resolve())
    exclude = set(exclude or ()) | {os.getpid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        env = environ(int(entry.name))
        if env.get(mark_var) != mark:
            continue
        name = env.get(NAME_VAR, "?")
        if service is not None and name != service:
            continue
        cmd = cmdline(int(entry.name))
        if not cmd or in_sandbox(int(entry.name)):  # a zombie; a sandbox (re-adopted)
            continue
        found.append(Instance(int(entry.name), name, cmd, _ppid(int(entry.name))))
    return found


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def started_by_hub(found: list[Instance]) -> list[Instance]:
    """The instances the hub started: not their children (the gateway's proxy)."""
    pids = {i.pid: i.service for i in found}
    return [i for i in found if pids.get(i.ppid) != i.service]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def stop(instances: list[Instance], grace: float | None = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, for every instance (at once when
    ``grace`` is None: no chance to clean up, as a crash)."""
    steps = [(signal.SIGKILL, 5.0)]
    if grace is not None:
        steps.insert(0, (signal.SIGTERM, grace))
    for sig, wait in steps:
        left = [i for i in instances if _alive(i.pid)]
        for i in left:
            try:
                os.kill(i.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(_alive(i.pid) for i in left) and time.monotonic() < deadline:
            time.sleep(0.05)
    left = [i.describe() for i in instances if _alive(i.pid)]
    if left:
        raise RuntimeError(f"earlier service instances did not stop: {', '.join(left)}")


def stop_previous(state_dir: str | os.PathLike[str], service: str | None = None,
                  exclude: set[int] | None = None, mark_var: str = MARK) -> list[str]:
    """Stop the marked processes of ``state_dir`` (``service``'s only, if given);
    return what was stopped, described for the log and the audit record."""
    instances = find(state_dir, service, exclude, mark_var)
    if not instances:
        return []
    described = [i.describe() for i in instances]
    log.warning("stopping %d process(es) left by earlier services of %s: %s",
                len(instances), state_dir, "; ".join(described))
    stop(instances)
    return described


def stop_my_previous(audit: Any | None = None) -> list[str]:
    """In a hub-managed service, at start: stop what an earlier instance of this
    service left (the hub restarts a service that died; its children may live on).
    Nothing when not started by the hub with the mark."""
    var = MARK if os.environ.get(MARK) else SUPERVISED_MARK
    mark, name = os.environ.get(var), os.environ.get(NAME_VAR)
    if not mark or not name:
        return []
    stopped = stop_previous(mark, name, exclude=_ancestors(), mark_var=var)
    record_removed(audit, name, "service processes", stopped)
    return stopped


#: the audit event of what a start removed (processes, temporary files)
LEFTOVERS_EVENT = AuditEvent.PLATFORM_LEFTOVERS_REMOVED


def record_removed(audit: Any | None, component: str, kind: str, removed: list) -> None:
    """Audit (and log) what ``component`` removed at start, if anything."""
    if not removed:
        return
    log.warning("%s removed %d leftover %s at start", component, len(removed), kind)
    if audit is not None:
        audit.record(LEFTOVERS_EVENT, actor=component, outcome="success",
                     component=component, kind=kind, removed=removed)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        pid = _ppid(pid)
    return pids
