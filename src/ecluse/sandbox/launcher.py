"""The sandbox launcher: one small root daemon through which services start sandboxes.

``ecluse sandbox launcher`` (or ``python -m ecluse.sandbox.launcher``) listens
on a Unix socket (``sandbox.launcher_socket``, mode 0660, group
``sandbox.launcher_group``). The services — the airlock, batch, dask-gateway
and the spawner — then run as non-root users and ask it for sandboxes through
:class:`~ecluse.sandbox.remote.LauncherSandbox`.

Each connection carries one JSON request and gets one JSON answer. The caller
is known by the kernel-verified uid of its socket peer (``SO_PEERCRED``),
mapped to a role (``hub``, ``airlock``, ``batch``, ``dask``) by
``sandbox.launcher_callers``; an unknown uid is refused. Then the **policy of
that role** decides, by allow-list, and everything it does not allow is
refused with a message that says why, and audited
(``sandbox.launch.refused``):

* which operations (:data:`OPS`): the airlock may only ``run`` one-shot check
  sandboxes;
* which sandbox names (:data:`NAMES`);
* which project: a check sandbox's project is made here (reserved
  ``airlock-check-`` slug, the check group, the airlock's check limits, no
  dataset); any other project must be one of the deployment's, with its
  datasets and quota as configured here — never as sent;
* which user: the airlock only the check uid; the others never the check uid,
  a service's uid or a system account;
* which host ports the sandbox may reach (:meth:`Policy.ports`) and which port
  it serves on;
* which mounts (:data:`MOUNTS`): the targets of the role, each at most once,
  whose source must be a directory the caller owns, directly under the role's
  own root (the airlock: ``<staging>/tmp/sbx-*`` at ``/airlock-check``, and
  ``<staging>/tmp/ledger-*`` — the ledger rows a differencing job reads — at
  ``/airlock-ledger``). The launcher opens it component by component
  without following symbolic links and mounts what it opened
  (``/proc/<launcher>/fd/<n>``), so a path swapped after the check mounts
  nothing else. ``..``, symlinks, the state directory, ``/etc``, a dataset:
  refused.

Sandboxes a caller started are its own: polling, stopping or reading another
caller's sandbox is refused.

The batch service's runs write in the project's shared folder, which its user
may not enter: the launcher makes a run's folder (``run_folder_create``:
``/project/batch/<run>`` of a deployment project, owned by the run's identity,
which the policy checks like a sandbox's user) and reads back from it
(``run_folder_list``, ``run_folder_read``): regular files directly in it,
opened beneath the folder without following a link, never hidden names, never
a file with another name elsewhere (a hard link), at most
``airlock.max_file_bytes`` (the largest file an export stages) and
:data:`READ_CHUNK` bytes per answer (:mod:`ecluse.batch.files`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import json
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import struct
import sys
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..audit import AuditLog
from ..auditevents import AuditEvent, is_event
from ..config import Project, Quota
from ..settings.airlock import airlock_settings
from . import get_backend, sandbox_python_env, user_site_venv_cfg
from .base import Mount, SandboxError, SandboxSpec, UserIdentity
from .local import check_sandboxes

log = logging.getLogger("ecluse.sandbox.launcher")

Caller = Literal["hub", "airlock", "batch", "dask"]
Op = Literal["run", "launch", "poll", "terminate", "release", "read_logs", "host_address",
             "prepare_project_dirs", "list", "audit", "run_folder_create", "run_folder_list",
             "run_folder_read"]

#: what each caller may ask for (anything else: refused)
OPS: dict[str, frozenset[str]] = {
    "airlock": frozenset({"run", "audit"}),
    "batch": frozenset({"launch", "poll", "terminate", "release", "read_logs",
                        "prepare_project_dirs", "list", "audit", "run_folder_create",
                        "run_folder_list", "run_folder_read"}),
    "dask": frozenset({"launch", "poll", "terminate", "release", "read_logs", "host_address",
                       "prepare_project_dirs", "list", "audit"}),
    "hub": frozenset({"launch", "poll", "terminate", "release", "read_logs", "host_address",
                      "prepare_project_dirs", "list", "audit"}),
}
#: the sandbox names each caller may use
NAMES: dict[str, re.Pattern[str]] = {
    "airlock": re.compile(r"airlock-check"),
    "batch": re.compile(r"batch"),
    "dask": re.compile(r"dask-[A-Za-z0-9_.-]{1,55}"),
    "hub": re.compile(r"workspace"),
}
#: the audit events each caller may append through the launcher (``audit``): a service
#: that cannot write the audit log itself (it runs as its own user, without the state
#: directory) records its own events only; the launcher stamps who sent them
AUDIT_EVENTS: dict[str, re.Pattern[str]] = {
    # the airlock: its own events, and what its start swept (a killed instance's partial
    # uploads and work folders)
    "airlock": re.compile(r"airlock\.[a-z0-9_]{1,40}(\.[a-z0-9_]{1,40}){0,2}"
                          r"|platform\.leftovers_removed"),
    # dask-gateway: its refusals and revocations, and what its start removed
    "dask": re.compile(r"dask\.[a-z0-9_]{1,40}|platform\.leftovers_removed"),
    # batch: its runs' events, and what its start removed
    "batch": re.compile(r"batch\.[a-z0-9_]{1,40}|platform\.leftovers_removed"),
    # the hub (hub.service_user): sign-ins and the second factor (authenticator), group
    # changes, revocations (reconciler), workspaces (spawner, route filter), and what
    # its start removed; never another service's events, nor the launcher's own
    "hub": re.compile(r"(login|mfa|workspace)\.[a-z0-9_]{1,40}|groups\.change|auth\.refresh"
                      r"|membership\.revoked|platform\.leftovers_removed"),
}
#: detail keys the launcher sets on an ``audit`` record (a caller may not send them)
AUDIT_STAMPS = ("via", "via_uid", "via_pid")
#: the mount targets each caller may ask for (each at most once), and for each the
#: pattern of the source folder's path relative to the caller's root (see
#: Policy.mount_root): the airlock's job folder, and for differencing the folder
#: holding the ledger rows of the request's scopes
MOUNTS: dict[str, dict[str, tuple[re.Pattern[str], ...]]] = {
    "airlock": {"/airlock-check": (re.compile(r"sbx-[A-Za-z0-9_]{1,64}"),),
                "/airlock-ledger": (re.compile(r"ledger-[A-Za-z0-9_]{1,64}"),)},
    "batch": {"/batch-input": (re.compile(r"[A-Za-z0-9_-]{1,64}"), re.compile(r"input"))},
    "hub": {"/etc/jupyter": ()},
    "dask": {},
}

REFUSED_EVENT = AuditEvent.SANDBOX_LAUNCH_REFUSED
STARTED_EVENT = AuditEvent.SANDBOX_LAUNCH
MAX_REQUEST_BYTES = 1 << 20
REQUEST_TIMEOUT = 30.0  # seconds to send one request line
#: a sandbox's id, as each backend makes it: ``s`` (local), ``d`` (docker), ``k``
#: (kubernetes) and 10 hex digits (a docker workspace's polls were refused as malformed)
SANDBOX_ID = r"^[sdk][0-9a-f]{10}$"
#: a batch run's id (its folder's name: ``/project/batch/<run>``)
RUN_ID = r"^br-[0-9a-f]{12}$"
#: most bytes of one ``run_folder_read`` answer
READ_CHUNK = 4 * 1024 * 1024
#: when its supervisor died: seconds without a request before the launcher stops, and
#: the most it serves on (see serve)
LINGER_QUIET, LINGER_MAX = 5.0, 60.0


class LaunchRefused(SandboxError):
    """The launcher's policy refused a request; the message says why."""


# ------------------------------------------------------------------ the wire


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WireUser(_Wire):
    name: str = Field(max_length=64)
    uid: int
    gid: int


class WireMount(_Wire):
    source: str = Field(max_length=4096)
    target: str = Field(max_length=4096)
    read_only: bool = True


class WireSpec(_Wire):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    project_gid: int | None = None
    user: WireUser
    command: list[str] = Field(min_length=1, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    port: int | None = Field(None, ge=1, le=65535)
    allowed_ports: list[int] = Field(default_factory=list, max_length=32)
    workdir: str | None = Field(None, max_length=4096)
    mounts: list[WireMount] = Field(default_factory=list, max_length=8)
    name: str = Field("", max_length=64)


class Request(_Wire):
    op: Op
    caller: Caller | None = None
    spec: WireSpec | None = None
    one_shot: bool = False
    id: str | None = Field(None, pattern=SANDBOX_ID)
    timeout: float | None = Field(None, gt=0)
    grace: float | None = Field(None, ge=0)
    project: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{1,62}$")
    project_gid: int | None = None
    user: WireUser | None = None
    # op "audit": one record of the caller's own events
    event: str | None = Field(None, max_length=80)
    actor: str | None = Field(None, max_length=128)
    #: the record's project as the service names it (a refused request's may be no slug)
    audit_project: str | None = Field(None, max_length=256)
    outcome: str | None = Field(None, pattern=r"^[a-z_]{1,20}$")
    details: dict[str, Any] | None = None
    # ops "run_folder_*": a batch run's folder and one file of it
    run: str | None = Field(None, pattern=RUN_ID)
    file: str | None = Field(None, min_length=1, max_length=255)
    offset: int = Field(0, ge=0)
    length: int = Field(READ_CHUNK, ge=0, le=READ_CHUNK)
    #: the file read earlier chunks of (its inode): a file swapped meanwhile is refused
    inode: int | None = None


def wire_spec(spec: SandboxSpec) -> dict[str, Any]:
    """A :class:`SandboxSpec` as the launcher reads it (the project by slug only)."""
    return {
        "project": spec.project.slug, "project_gid": spec.project.gid,
        "user": asdict(spec.user), "command": list(spec.command), "env": dict(spec.env),
        "port": spec.port, "allowed_ports": list(spec.allowed_ports), "workdir": spec.workdir,
        "mounts": [{"source": str(m.source), "target": m.target, "read_only": m.read_only}
                   for m in spec.extra_mounts],
        "name": spec.name,
    }


# ------------------------------------------------------------------ the policy


def _uid_of(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise SandboxError(f"sandbox.launcher_callers: no system user {user!r} on this host; "
                           "create it (the install creates ecluse-airlock and ecluse)") from None


class Policy:
    """What each caller may ask for, from the deployment's settings (never the request)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.airlock = airlock_settings(settings)
        self.callers: dict[int, set[str]] = {}
        for caller, user in settings.sandbox.launcher_callers.items():
            self.callers.setdefault(_uid_of(str(user)), set()).add(caller)

    def caller_of(self, uid: int, asked: str | None) -> str:
        roles = self.callers.get(uid)
        if not roles:
            raise LaunchRefused(f"uid {uid} is not a caller of the sandbox launcher "
                                "(sandbox.launcher_callers)")
        if asked is None:
            if len(roles) > 1:
                raise LaunchRefused(f"uid {uid} is several callers ({', '.join(sorted(roles))}); "
                                    "the request must name one")
            return next(iter(roles))
        if asked not in roles:
            raise LaunchRefused(f"uid {uid} is not the {asked} caller")
        return asked

    def allow_op(self, caller: str, op: str) -> None:
        if op not in OPS[caller]:
            raise LaunchRefused(f"the {caller} may not ask the launcher to {op} "
                                f"(allowed: {', '.join(sorted(OPS[caller]))})")

    def ports(self, caller: str) -> set[int]:
        """Host ports a sandbox of ``caller`` may reach."""
        s = self.settings
        if caller == "hub":
            return {s.hub.hub_port, self.airlock.port, s.dask.api_port, s.dask.proxy_port}
        if caller == "dask":
            return {s.dask.api_port}
        return set()

    def mount_root(self, caller: str) -> Path:
        """The folder under which ``caller``'s one mount source must be."""
        state = Path(self.settings.state_dir)
        if caller == "airlock":
            # deferred: import cycle (the services start their sandboxes through this module)
            from ..airlock.storage import Staging

            return Staging(self.airlock.resolved_storage_dir(state)).tmp
        if caller == "batch":
            # deferred: import cycle (the services start their sandboxes through this module)
            from ..batch.records import ROOT_NAME

            return state / ROOT_NAME
        return state / "workspace" / "jupyter"  # the hub: the workspace Jupyter config

    def reserved_uids(self) -> set[int]:
        return {self.airlock.check_uid, *self.callers}

    def project(self, caller: str, spec: WireSpec) -> Any:
        # deferred: import cycle (the services start their sandboxes through this module)
        from ..airlock.checkbox import CHECK_PROJECT_PREFIX

        a = self.airlock
        if caller == "airlock":
            if not re.fullmatch(re.escape(CHECK_PROJECT_PREFIX) + r"[0-9a-f]{8}", spec.project):
                raise LaunchRefused(f"the airlock may start check sandboxes only (project "
                                    f"{CHECK_PROJECT_PREFIX}<8 hex digits>), not {spec.project!r}")
            return Project(slug=spec.project, title="airlock check", ldap_group="-",
                           gid=a.check_gid,
                           quota=Quota(cpu=a.check_cpu, memory=a.check_memory, pids=64))
        if spec.project.startswith(CHECK_PROJECT_PREFIX):
            raise LaunchRefused(f"only the airlock starts check sandboxes ({spec.project})")
        project = self.settings.projects.get(spec.project)
        if project is None:
            raise LaunchRefused(f"no project {spec.project!r} in this deployment")
        gid = spec.project_gid if spec.project_gid is not None else project.gid
        if gid is None or gid < 1000 or gid == a.check_gid:
            raise LaunchRefused(f"project {spec.project}: group id {gid} is not allowed")
        if project.gid is not None and gid != project.gid:
            raise LaunchRefused(f"project {spec.project}: group id {gid} is not the project's")
        return project.model_copy(update={"gid": gid})

    def user(self, caller: str, u: WireUser) -> UserIdentity:
        a = self.airlock
        try:
            user = UserIdentity(u.name, u.uid, u.gid)
        except ValueError as e:
            raise LaunchRefused(str(e)) from None
        if caller == "airlock":
            if (u.name, u.uid, u.gid) != (a.check_user, a.check_uid, a.check_gid):
                raise LaunchRefused(
                    f"the airlock may run checks as {a.check_user} ({a.check_uid}:"
                    f"{a.check_gid}) only, not as {u.name} ({u.uid}:{u.gid})")
        elif u.uid in self.reserved_uids() or u.gid == a.check_gid:
            raise LaunchRefused(f"uid {u.uid} is reserved (the check uid or a service's)")
        return user

    def check(self, caller: str, spec: WireSpec, peer_uid: int) -> tuple[SandboxSpec, list[int]]:
        """The spec to launch, and the fds its mounts hold open (the caller closes them)."""
        if not NAMES[caller].fullmatch(spec.name):
            raise LaunchRefused(f"the {caller} may not start a sandbox named {spec.name!r}")
        project = self.project(caller, spec)
        user = self.user(caller, spec.user)
        allowed = self.ports(caller)
        bad = sorted(set(spec.allowed_ports) - allowed)
        if bad:
            raise LaunchRefused(f"the {caller}'s sandboxes may not reach host port(s) "
                                + ", ".join(map(str, bad)))
        if spec.port is not None and caller in ("airlock", "batch"):
            raise LaunchRefused(f"the {caller}'s sandboxes serve no port (asked {spec.port})")
        if caller == "airlock" and project.datasets:  # pragma: no cover - made above
            raise LaunchRefused("a check sandbox has no dataset")
        targets = [m.target for m in spec.mounts]
        if len(set(targets)) != len(targets):
            raise LaunchRefused(f"the {caller} may mount one folder per target, not "
                                f"{', '.join(sorted(targets))}")
        fds: list[int] = []
        own = self.venv_cfg_mount(caller, spec.mounts)
        try:
            mounts = [self._mount(caller, m, peer_uid, fds) for m in spec.mounts
                      if own is None or m.target != own.target]
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if own is not None:
            mounts.append(own)
        try:
            out = SandboxSpec(project, user, list(spec.command), env=dict(spec.env),
                              port=spec.port, allowed_ports=list(spec.allowed_ports),
                              workdir=spec.workdir, extra_mounts=mounts, name=spec.name)
        except ValueError as e:
            for fd in fds:
                os.close(fd)
            raise LaunchRefused(str(e)) from None
        return out, fds

    def venv_cfg_mount(self, caller: str, mounts: list[WireMount]) -> Mount | None:
        """The workspace environment's ``pyvenv.cfg`` that reads the user site, when the
        hub asks for one at its target (``pip install --user``: the local backend,
        :func:`ecluse.sandbox.user_site_venv_cfg`): the launcher's own copy, written by
        root in ``<state>/launcher-workspace``, whatever source the hub named — a file
        the hub wrote could say anything, or be a link to one it may not read."""
        if caller != "hub":
            return None
        target = str(sandbox_python_env(self.settings) / "pyvenv.cfg")
        asked = [m for m in mounts if m.target == target]
        if not asked:
            return None
        if not asked[0].read_only:
            raise LaunchRefused(f"{target} must be mounted read-only")
        own = user_site_venv_cfg(self.settings,
                                 Path(self.settings.state_dir) / "launcher-workspace")
        if own is None:
            raise LaunchRefused(f"the hub may not mount anything at {target!r} (the "
                                "workspace environment reads the user site already)")
        return own

    def _mount(self, caller: str, m: WireMount, peer_uid: int, fds: list[int]) -> Mount:
        rules = MOUNTS[caller]
        if m.target not in rules:
            raise LaunchRefused(f"the {caller} may not mount anything at {m.target!r}"
                                + (f" (only {', '.join(rules)})" if rules else ""))
        if not m.read_only:
            raise LaunchRefused(f"{m.target} must be mounted read-only")
        root = self.mount_root(caller)
        source = PurePosixPath(m.source)
        if not source.is_absolute() or ".." in source.parts or str(source) != m.source.rstrip("/"):
            raise LaunchRefused(f"mount source {m.source!r} is not a plain absolute path")
        try:
            rel = source.relative_to(root)
        except ValueError:
            raise LaunchRefused(f"the {caller} may mount folders under {root} only, "
                                f"not {m.source}") from None
        patterns = rules[m.target]
        if len(rel.parts) != len(patterns) or not all(
                p.fullmatch(part) for p, part in zip(patterns, rel.parts, strict=True)):
            raise LaunchRefused(f"mount source {m.source} is not a {caller} folder")
        fd = open_beneath(root, rel.parts)
        fds.append(fd)
        st = os.fstat(fd)
        if st.st_uid != peer_uid:
            raise LaunchRefused(f"mount source {m.source} is not the {caller}'s own "
                                f"(owner uid {st.st_uid})")
        return Mount(Path(f"/proc/{os.getpid()}/fd/{fd}"), m.target, read_only=True)


def open_beneath(root: Path, parts: tuple[str, ...]) -> int:
    """An fd of ``root/parts...``, every part opened without following a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(root, flags)
    except OSError as e:
        raise LaunchRefused(f"{root} cannot be opened ({e.strerror})") from None
    try:
        for part in parts:
            try:
                nxt = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                raise LaunchRefused(
                    f"{root}/{'/'.join(parts)}: {part!r} is not a folder ({e.strerror}; "
                    "symbolic links are never followed)") from None
            os.close(fd)
            fd = nxt
        if not stat.S_ISDIR(os.fstat(fd).st_mode):  # pragma: no cover - O_DIRECTORY
            raise LaunchRefused(f"{root}/{'/'.join(parts)} is not a folder")
    except BaseException:
        os.close(fd)
        raise
    return fd


# ------------------------------------------------------------------ the daemon


class Launcher:
    """The daemon: policy, audit, and the local backend doing the work."""

    def __init__(self, settings: Any, *, audit: Any = None, backend: Any = None,
                 check_backend: Any = None) -> None:
        if os.geteuid() != 0:
            raise SandboxError("the sandbox launcher must run as root")
        self.settings = settings
        self.policy = Policy(settings)
        if audit is None:
            audit = AuditLog.from_settings(settings)
        self.audit = audit
        self.backend = backend or get_backend(settings)
        self.check_backend = check_backend or check_sandboxes(settings)
        self.owners: dict[str, tuple[str, dict[str, Any]]] = {}
        self.mount_fds: dict[str, list[int]] = {}
        self.handlers: set[asyncio.Task[Any]] = set()
        # the airlock's one-shot checks at once (more wait): a flood of requests from
        # a taken-over airlock costs the host no more than its configured checks
        self.check_slots = asyncio.Semaphore(max(1, self.policy.airlock.check_processes))
        self.server: asyncio.AbstractServer | None = None
        #: the loop time of the last request (linger)
        self.last_request = 0.0

    # ---------------------------------------------------------------- socket

    async def start(self, path: str | os.PathLike[str] | None = None) -> None:
        path = Path(path or self.settings.sandbox.launcher_socket or "")
        if not str(path):
            raise SandboxError("sandbox.launcher_socket is not set")
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(path),
                                                          limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old)
        group = self.settings.sandbox.launcher_group
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, 0, gid)
            os.chmod(path, 0o660)
        self.path = path
        log.info("sandbox launcher on %s (callers: %s)", path, ", ".join(
            f"{c}=uid {u}" for u, cs in self.policy.callers.items() for c in sorted(cs)))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.handlers:  # requests in flight: their sandboxes stop and are removed
            for task in self.handlers:
                task.cancel()
            await asyncio.wait(self.handlers, timeout=60)
        for sid, (_caller, state) in list(self.owners.items()):
            with contextlib.suppress(Exception):
                if state.get("one_shot"):
                    await self.backend.stop(state, grace=0)
            self.owners.pop(sid, None)
        for fds in self.mount_fds.values():
            self._close(fds)
        self.mount_fds.clear()

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def linger(self) -> None:
        """Serve on until no request came for :data:`LINGER_QUIET` seconds (at most
        :data:`LINGER_MAX`): the callers that stop with us finish their stops first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_MAX
        while loop.time() < deadline and (
                self.handlers or loop.time() - self.last_request < LINGER_QUIET):
            await asyncio.sleep(0.2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.last_request = asyncio.get_running_loop().time()
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)
        sock = writer.get_extra_info("socket")
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            if not line:  # connected and left (a readiness probe): nothing asked
                writer.close()
                return
            answer = await self.handle(uid, pid, line, reader)
        except Exception as e:  # noqa: BLE001 - the answer says what failed
            log.exception("launcher request from uid %s failed", uid)
            answer = {"ok": False, "error": f"the launcher failed ({type(e).__name__})"}
        with contextlib.suppress(ConnectionError):
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
            writer.close()

    # ------------------------------------------------------------- requests

    async def handle(self, uid: int, pid: int, line: bytes,
                     reader: asyncio.StreamReader | None = None) -> dict[str, Any]:
        caller = None
        op = None
        try:
            try:
                req = Request.model_validate_json(line)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(x) for x in first["loc"])
                raise LaunchRefused(f"malformed request: {where}: {first['msg']}") from None
            op = req.op
            caller = self.policy.caller_of(uid, req.caller)
            self.policy.allow_op(caller, req.op)
            handler = getattr(self, "_op_" + req.op)
            if req.op == "audit":
                result = await handler(caller, uid, req, reader, pid=pid)
            else:
                result = await handler(caller, uid, req, reader)
        except SandboxError as e:
            refused = isinstance(e, LaunchRefused)
            if refused:
                log.warning("refused uid %s (%s) %s: %s", uid, caller or "unknown", op, e)
                await asyncio.to_thread(
                    self.audit.record, REFUSED_EVENT, actor=f"uid:{uid}", outcome="denied",
                    caller=caller, op=op, pid=pid, reason=str(e))
            return {"ok": False, "refused": refused, "error": str(e)}
        return {"ok": True, **result}

    async def _audit_start(self, caller: str, uid: int, spec: SandboxSpec, sid: str) -> None:
        await asyncio.to_thread(
            self.audit.record, STARTED_EVENT, actor=f"uid:{uid}", project=spec.project.slug,
            caller=caller, sandbox=sid, name=spec.name, user=spec.user.name)

    def _spec(self, caller: str, uid: int, req: Request) -> tuple[SandboxSpec, list[int]]:
        if req.spec is None:
            raise LaunchRefused(f"{req.op}: no spec")
        return self.policy.check(caller, req.spec, uid)

    async def _op_run(self, caller: str, uid: int, req: Request,
                      reader: asyncio.StreamReader | None) -> dict[str, Any]:
        spec, fds = self._spec(caller, uid, req)
        limit = self.policy.airlock.check_timeout if caller == "airlock" else None
        timeout = req.timeout if limit is None else min(req.timeout or limit, limit)
        backend = self.check_backend if caller == "airlock" else self.backend
        slots = self.check_slots if caller == "airlock" else contextlib.nullcontext()
        try:
            await self._audit_start(caller, uid, spec, "run")
            task = asyncio.ensure_future(self._run_in(slots, backend, spec, timeout))
            try:
                if reader is not None:
                    # the caller going away (a crash, a cancelled check) stops the sandbox
                    gone = asyncio.ensure_future(reader.read(1))
                    try:
                        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        gone.cancel()
                    if not task.done():
                        raise SandboxError("the caller went away: sandbox stopped")
                result = await task
            except BaseException:
                if not task.done():  # the caller went away, or the launcher stops
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                raise
        finally:
            for fd in fds:
                os.close(fd)
            if caller == "airlock":
                await asyncio.to_thread(self._remove_check_dirs, spec.project.slug)
        return {"result": asdict(result)}

    @staticmethod
    async def _run_in(slots: Any, backend: Any, spec: SandboxSpec, timeout: float | None) -> Any:
        async with slots:
            return await backend.run(spec, timeout=timeout)

    def _remove_check_dirs(self, slug: str) -> None:
        root = Path(self.settings.projects_root)
        shutil.rmtree(root / slug, ignore_errors=True)

    async def _op_launch(self, caller: str, uid: int, req: Request,
                         reader: Any) -> dict[str, Any]:
        spec, fds = self._spec(caller, uid, req)
        try:
            state = await self.backend.launch(spec, one_shot=req.one_shot)
        except BaseException:
            self._close(fds)
            raise
        # bubblewrap binds the mount sources after it reports the sandbox started:
        # their fds stay open until the sandbox is released
        self.mount_fds[state["id"]] = fds
        self.owners[state["id"]] = (caller, state)
        state["caller"] = caller
        if hasattr(self.backend, "_save_meta"):
            await asyncio.to_thread(self.backend._save_meta, state)
        await self._audit_start(caller, uid, spec, state["id"])
        return {"state": state}

    def _owned(self, caller: str, req: Request) -> dict[str, Any] | None:
        """The launcher's own state of sandbox ``req.id`` (None: gone); refused unless
        ``caller`` started it."""
        if req.id is None:
            raise LaunchRefused(f"{req.op}: no sandbox id")
        if req.id in self.owners:
            owner, state = self.owners[req.id]
        else:  # started before a restart of the launcher: its meta data on disk
            meta = Path(getattr(self.backend, "runtime_dir", "/run/ecluse")) / "sandboxes" \
                / req.id / "meta.json"
            try:
                state = json.loads(meta.read_text())
            except (OSError, ValueError):
                return None
            owner = state.get("caller")
        if owner != caller:
            raise LaunchRefused(f"sandbox {req.id} is not the {caller}'s")
        return state

    async def _op_poll(self, caller: str, uid: int, req: Request, reader: Any) -> dict[str, Any]:
        state = self._owned(caller, req)
        if state is None:
            return {"gone": True}
        status = await self.backend.poll(state)
        if status is not None:  # ended: its mounts are gone
            self._close(self.mount_fds.pop(state["id"], []))
        return {"status": status, "state": state}

    async def _op_terminate(self, caller: str, uid: int, req: Request,
                            reader: Any) -> dict[str, Any]:
        state = self._owned(caller, req)
        if state is not None:
            await self.backend.terminate(state, req.grace)
        return {"state": state}

    async def _op_release(self, caller: str, uid: int, req: Request,
                          reader: Any) -> dict[str, Any]:
        state = self._owned(caller, req)
        if state is not None:
            await self.backend.release(state)
            self.owners.pop(state["id"], None)
            self._close(self.mount_fds.pop(state["id"], []))
        return {"state": state}

    async def _op_read_logs(self, caller: str, uid: int, req: Request,
                            reader: Any) -> dict[str, Any]:
        state = self._owned(caller, req)
        out, err = await self.backend.read_logs(state) if state is not None else ("", "")
        return {"stdout": out, "stderr": err}

    async def _op_list(self, caller: str, uid: int, req: Request, reader: Any) -> dict[str, Any]:
        """The caller's own registered sandboxes (e.g. one-shot runs of a service that
        restarted), with ``alive`` set."""
        listing = getattr(self.backend, "list", None)
        metas = await asyncio.to_thread(listing) if listing is not None else []
        return {"sandboxes": [m for m in metas if m.get("caller") == caller]}

    async def _op_audit(self, caller: str, uid: int, req: Request, reader: Any,
                        pid: int = 0) -> dict[str, Any]:
        """Append one audit record for ``caller``: its own events only, stamped with its
        role and kernel-verified uid and pid (``via``, ``via_uid``, ``via_pid``)."""
        rule = AUDIT_EVENTS.get(caller)
        if req.event is None or rule is None or not rule.fullmatch(req.event):
            raise LaunchRefused(f"the {caller} may not record the audit event {req.event!r}")
        if not is_event(req.event):
            raise LaunchRefused(f"{req.event!r} is not an audit event")
        details = dict(req.details or {})
        stamped = sorted(set(details) & {*AUDIT_STAMPS, "event", "actor", "project", "outcome"})
        if stamped:
            raise LaunchRefused(f"audit details may not set {', '.join(stamped)}")
        details.update(via=caller, via_uid=uid, via_pid=pid)
        rec = await asyncio.to_thread(
            self.audit.record, req.event, actor=req.actor, project=req.audit_project,
            outcome=req.outcome or "success", **details)
        return {"seq": rec.seq}

    # ------------------------------------------------------------- run folders

    def _run_folders(self) -> Any:
        # deferred: import cycle (the services start their sandboxes through this module)
        from ..batch.files import LocalRunFolders

        return LocalRunFolders(self.settings, self.backend)

    def _run_folder_where(self, caller: str, req: Request) -> str:
        # deferred: import cycle (the services start their sandboxes through this module)
        from ..airlock.checkbox import CHECK_PROJECT_PREFIX

        if req.project is None or req.run is None:
            raise LaunchRefused(f"{req.op}: project and run are required")
        if req.project.startswith(CHECK_PROJECT_PREFIX) or \
                req.project not in self.settings.projects:
            raise LaunchRefused(f"no project {req.project!r} in this deployment")
        return req.project

    async def _op_run_folder_create(self, caller: str, uid: int, req: Request,
                                    reader: Any) -> dict[str, Any]:
        """``/project/batch/<run>`` of a deployment project, new and empty, owned by the
        run's identity (a user the policy allows for a sandbox), group the project."""
        if req.user is None:
            raise LaunchRefused("run_folder_create: user is required")
        self._run_folder_where(caller, req)
        wire = WireSpec(project=req.project or "", project_gid=req.project_gid, user=req.user,
                        command=["true"])
        project, user = self.policy.project(caller, wire), self.policy.user(caller, req.user)

        def create() -> None:
            # deferred: import cycle (the services start their sandboxes through this module)
            from ..batch.errors import BatchError

            try:
                self._run_folders().create(project, user, project.gid, req.run).close()
            except FileExistsError:
                raise LaunchRefused(f"run folder {req.run} exists already") from None
            except BatchError as e:
                raise LaunchRefused(f"run folder {req.run}: {e.message}") from None

        await asyncio.to_thread(create)
        return {}

    def _open_run_folder(self, caller: str, req: Request) -> Any:
        # deferred: import cycle (the services start their sandboxes through this module)
        from ..batch.errors import BatchError

        project = self._run_folder_where(caller, req)
        try:
            return self._run_folders().open(project, req.run)
        except BatchError as e:
            raise LaunchRefused(f"run folder {req.run}: {e.message}") from None

    async def _op_run_folder_list(self, caller: str, uid: int, req: Request,
                                  reader: Any) -> dict[str, Any]:
        """The regular files directly in a run's folder (name, size), no hidden name."""
        def listing() -> list[dict[str, Any]]:
            with self._open_run_folder(caller, req) as folder:
                return [{"name": n, "size": size} for n, size in folder.list()]

        return {"files": await asyncio.to_thread(listing)}

    async def _op_run_folder_read(self, caller: str, uid: int, req: Request,
                                  reader: Any) -> dict[str, Any]:
        """At most ``length`` bytes at ``offset`` of one regular file of a run's folder
        (base64), its size and inode; ``missing`` when there is none."""
        # deferred: import cycle (the services start their sandboxes through this module)
        from ..batch.errors import BatchError
        from ..batch.files import file_name_problem, read_chunk  # deferred: as above

        problem = file_name_problem(req.file)
        if problem:
            raise LaunchRefused(f"run_folder_read: {req.file!r} is {problem}")
        limit = self.policy.airlock.max_file_bytes

        def read() -> dict[str, Any]:
            with self._open_run_folder(caller, req) as folder:
                try:
                    got = read_chunk(folder.fd, req.file or "", req.offset, req.length, limit)
                except BatchError as e:
                    raise LaunchRefused(f"run folder {req.run}: {e.message}") from None
            if got is None:
                return {"missing": True}
            data, ident = got
            if req.inode is not None and ident["inode"] != req.inode:
                raise LaunchRefused(f"run folder {req.run}: {req.file} was replaced while "
                                    "it was read")
            return {"data": base64.b64encode(data).decode(), **ident}

        return await asyncio.to_thread(read)

    async def _op_host_address(self, caller: str, uid: int, req: Request,
                               reader: Any) -> dict[str, Any]:
        return {"address": await asyncio.to_thread(self.backend.host_address)}

    async def _op_prepare_project_dirs(self, caller: str, uid: int, req: Request,
                                       reader: Any) -> dict[str, Any]:
        if req.project is None or req.user is None:
            raise LaunchRefused("prepare_project_dirs: project and user are required")
        wire = WireSpec(project=req.project, project_gid=req.project_gid, user=req.user,
                        command=["true"])
        project, user = self.policy.project(caller, wire), self.policy.user(caller, req.user)
        paths = await asyncio.to_thread(self.backend.prepare_project_dirs, project, user)
        return {"shared": str(paths.shared), "home": str(paths.home)}


class LauncherProcess:
    """The launcher as a child process of ``ecluse up`` (root), from the same config file."""

    def __init__(self, settings: Any, *, log_file: Any = None,
                 preexec_fn: Any = None) -> None:
        self.settings = settings
        self.log_file = log_file
        #: e.g. ``ecluse up``'s death signal, so the launcher dies with it
        self.preexec_fn = preexec_fn
        self.proc: Any = None

    def start(self, timeout: float = 30.0) -> None:
        import subprocess
        import time

        if not self.settings.config_file:
            raise SandboxError("the sandbox launcher needs the settings' file "
                               "(sandbox.launcher_socket is set but no config file is known)")
        path = str(self.settings.sandbox.launcher_socket)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecluse.sandbox.launcher", "--config",
             str(self.settings.config_file)],
            stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT if self.log_file else None, start_new_session=True,
            preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SandboxError(f"the sandbox launcher exited with status "
                                   f"{self.proc.returncode} (its log says why)")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                return
            time.sleep(0.1)
        self.stop()
        raise SandboxError(f"the sandbox launcher did not listen on {path} within {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> None:
        import signal
        import subprocess

        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


async def serve(settings: Any) -> None:
    """Run the launcher until SIGTERM/SIGINT."""
    import signal

    parent = os.getppid()
    launcher = Launcher(settings)
    await launcher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        if os.getppid() != parent and settings.sandbox.launcher_callers.get("hub") not in (
                None, "root", "0"):
            # its supervisor died (`ecluse up` killed: everything got SIGTERM at once): the
            # hub, not root, stops its workspaces through us as it stops, so serve on
            # while it asks (LINGER_QUIET seconds without a request, LINGER_MAX at most)
            await launcher.linger()
    finally:
        await launcher.close()


if __name__ == "__main__":
    from ..cli import main

    raise SystemExit(main(["sandbox", "launcher", *sys.argv[1:]]))
