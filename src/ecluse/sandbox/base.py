"""The sandbox abstraction: run a command in project P's isolated environment as user U.

A :class:`Sandbox` backend is a small class. It says how to start, check and
stop one sandbox; this module carries the shared specification
(:class:`SandboxSpec`), the one-shot template (:meth:`Sandbox.run`) and the
error type. Two uses:

* **long-running** (workspace servers, Dask workers): :meth:`Sandbox.start`
  returns a JSON-able *state* dict that the caller saves (e.g. JupyterHub's
  ``get_state``); after a restart :meth:`Sandbox.poll` and :meth:`Sandbox.stop`
  work from that dict alone.
* **one-shot** (batch runs): :meth:`Sandbox.run` runs to completion and returns
  a :class:`RunResult` with the exit status and the captured output.

A backend must provide :meth:`launch`, :meth:`poll`, :meth:`stop`,
:meth:`read_logs`, :meth:`host_address` and :meth:`prepare_project_dirs`; it
may override :meth:`wait` with something better than polling.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets import Any as AnyTrait
from traitlets import Float, Integer, default
from traitlets.config import LoggingConfigurable

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Project

USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
#: the workspace Python environment inside the workspace image (images/workspace): what
#: sandboxes of a backend without ``host_python`` (docker, kubernetes) run
IMAGE_PYTHON_ENV = Path("/opt/ecluse/venv")


class SandboxError(Exception):
    """A sandbox could not be started, checked or stopped.

    ``str(error)`` is safe to show to the user; ``log_message`` carries the
    detail for the operator's log (command lines, stderr of system tools).
    """

    def __init__(self, message: str, *, log_message: str | None = None):
        super().__init__(message)
        self.log_message = log_message or message


BACKENDS = {
    "local": "ecluse.sandbox.local:LocalSandbox",
    "docker": "ecluse.sandbox.docker:DockerSandbox",
    "kubernetes": "ecluse.sandbox.kubernetes:KubernetesSandbox",
}


def backend_class(name: str) -> type[Sandbox]:
    """The backend class for ``name`` (``local``, ``docker``, ``kubernetes``)."""
    try:
        module, cls = BACKENDS[name].split(":")
    except KeyError:
        raise SandboxError(f"unknown sandbox backend {name!r}; expected one of "
                           + ", ".join(BACKENDS)) from None
    return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class UserIdentity:
    """Who runs in the sandbox: the LDAP uid, uidNumber and gidNumber."""

    name: str
    uid: int
    gid: int

    def __post_init__(self) -> None:
        if not USERNAME_RE.match(self.name):
            raise ValueError(f"invalid user name for a sandbox: {self.name!r}")
        if self.uid < 1000 or self.gid < 1000:
            raise ValueError(
                f"user {self.name!r}: uid/gid {self.uid}/{self.gid} below 1000 "
                "(system accounts never run sandboxes)"
            )


#: where a project's approved imports appear in every sandbox (read-only)
INBOX_TARGET = "/project/inbox"


@dataclass
class Mount:
    """An extra bind mount: ``source`` on the host at ``target`` in the sandbox."""

    source: Path
    target: str
    read_only: bool = True


@dataclass
class SandboxSpec:
    """What to run, for whom, in which project, with which network access.

    ``port``: the TCP port a long-running server listens on inside the
    sandbox (reachable from the host at ``state["ip"]:state["port"]``).
    ``allowed_ports``: TCP ports on :meth:`Sandbox.host_address` the sandbox
    may connect to (hub API, airlock). Everything else is unreachable.
    """

    project: Project
    user: UserIdentity
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    allowed_ports: list[int] = field(default_factory=list)
    workdir: str | None = None
    extra_mounts: list[Mount] = field(default_factory=list)
    name: str = ""  # a label for logs and listings, e.g. "workspace" or "batch"

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("SandboxSpec.command is empty")
        for p in [self.port, *self.allowed_ports]:
            if p is not None and not (1 <= int(p) <= 65535):
                raise ValueError(f"invalid port {p}")
        for m in self.extra_mounts:
            if not m.target.startswith("/") or ".." in m.target.split("/"):
                raise ValueError(f"invalid mount target {m.target!r}")

    @property
    def home(self) -> str:
        return f"/home/{self.user.name}"

    @property
    def cwd(self) -> str:
        return self.workdir or self.home


def planned_mounts(spec: SandboxSpec, projects_root: Path) -> list[Mount]:
    """Every mount of a sandbox, for any backend: datasets (ro), project, home, extras.

    ``/data/<dataset>`` read-only, ``/project`` = ``<projects_root>/<slug>/shared``
    and ``/home/<user>`` = ``<projects_root>/<slug>/home/<user>`` read-write, and
    ``/project/inbox`` = ``<projects_root>/<slug>/inbox`` read-only, a mount of its own
    over ``/project``: the approved imports (``ecluse.airlock.ingress``), which nothing
    in a sandbox may change.
    """
    pdir = Path(projects_root) / spec.project.slug
    mounts = [Mount(Path(ds.path), f"/data/{ds.name}", True) for ds in spec.project.datasets]
    mounts.append(Mount(pdir / "shared", "/project", False))
    mounts.append(Mount(pdir / "inbox", INBOX_TARGET, True))
    mounts.append(Mount(pdir / "home" / spec.user.name, spec.home, False))
    mounts.extend(spec.extra_mounts)
    return mounts


def sandbox_env(spec: SandboxSpec, path: str | None = None) -> dict[str, str]:
    """The environment of the sandboxed command: a fixed base, then ``spec.env``."""
    env = {
        "HOME": spec.home,
        "USER": spec.user.name,
        "LOGNAME": spec.user.name,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "ECLUSE_PROJECT": spec.project.slug,
        "ECLUSE_DATA": "/data",
        "ECLUSE_PROJECT_DIR": "/project",
    }
    if path:
        env["PATH"] = path
    env.update(spec.env)
    return env


@dataclass
class RunResult:
    """Outcome of a one-shot :meth:`Sandbox.run`."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    oom_killed: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed


@dataclass
class ProjectPaths:
    """Host paths of a project's shared folder and one member's home."""

    shared: Path
    home: Path


class Sandbox(LoggingConfigurable):
    """Base class of sandbox backends.

    A subclass must provide:

    ``launch(spec, one_shot) -> dict``
        start ``spec.command`` isolated; return a JSON-able state with at least
        ``id``, ``ip`` and ``port`` (where a server inside is reachable from
        the host). ``one_shot`` runs capture stdout and stderr separately and
        may die with their parent.
    ``poll(state) -> int | None``
        ``None`` while the sandbox runs, else its exit status (137 when killed
        for exceeding its memory). Must work on a state reloaded after a
        restart, and must not mistake a reused PID for the sandbox.
    ``terminate(state, grace) -> None``
        SIGTERM to the command, ``grace`` seconds (default
        ``SandboxSettings.stop_grace``), then kill every process of the sandbox.
    ``release(state) -> None``
        remove every resource of the (dead) sandbox: network, cgroup, runtime
        files. Idempotent. (:meth:`stop` is ``terminate`` then ``release``.)
    ``read_logs(state) -> (stdout, stderr)``
        output captured so far.
    ``host_address() -> str``
        address on which host services sandboxes may reach must listen.
    ``prepare_project_dirs(project, user) -> ProjectPaths``
        create the shared folder and the user's home with the right owners
        (``launch`` does it too: a caller need not before starting a sandbox).

    and say, as class attributes, where its sandboxes run:

    ``on_host``
        sandboxes run on this host and reach the hub side (hub API, airlock,
        Dask gateway) on :meth:`host_address`, where those listen;
    ``host_python``
        sandboxes run the Python environment of this host
        (``sandbox.python_env``), not an image's.
    """

    on_host: bool = False
    host_python: bool = False

    settings = AnyTrait(help="The deployment settings (ecluse.config.Settings).").tag(config=False)
    poll_interval = Float(
        0.05, help="Seconds between polls while waiting for a one-shot run."
    ).tag(config=True)
    max_log_bytes = Integer(
        4 * 1024 * 1024, help="Most bytes of stdout and of stderr kept from a one-shot run."
    ).tag(config=True)

    @default("log")
    def _log_default(self) -> logging.Logger:
        return logging.getLogger("ecluse.sandbox")

    # ------------------------------------------------------------- required

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    async def poll(self, state: dict[str, Any]) -> int | None:
        raise NotImplementedError

    async def terminate(self, state: dict[str, Any], grace: float | None = None) -> None:
        raise NotImplementedError

    async def release(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    async def read_logs(self, state: dict[str, Any]) -> tuple[str, str]:
        raise NotImplementedError

    def host_address(self) -> str:
        raise NotImplementedError

    def reach_address(self) -> str | None:
        """Where these sandboxes reach the hub side: :meth:`host_address` when they run
        on this host (creating the host network when missing), else None."""
        return self.host_address() if self.on_host else None

    def prepare_project_dirs(self, project: Project, user: UserIdentity) -> ProjectPaths:
        raise NotImplementedError

    # -------------------------------------------------------------- template

    async def start(self, spec: SandboxSpec) -> dict[str, Any]:
        """Start a long-running sandbox; return its JSON-able state."""
        return await self.launch(spec, one_shot=False)

    async def stop(self, state: dict[str, Any], grace: float | None = None) -> None:
        """Stop gracefully, then remove every resource of the sandbox (idempotent)."""
        if state.get("released"):
            return
        await self.terminate(state, grace)
        await self.release(state)

    async def wait(self, state: dict[str, Any], timeout: float | None = None) -> int | None:
        """Wait until the sandbox ends; its exit status, or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.01
        while True:
            status = await self.poll(state)
            if status is not None:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(interval)
            interval = min(interval * 2, self.poll_interval)

    async def run(self, spec: SandboxSpec, timeout: float | None = None) -> RunResult:
        """Run ``spec.command`` to completion (one-shot) and clean up.

        On timeout the sandbox is stopped (SIGTERM, then kill after the grace
        period) and ``timed_out`` is set.
        """
        t0 = time.monotonic()
        state = await self.launch(spec, one_shot=True)
        timed_out = False
        try:
            status = await self.wait(state, timeout)
            if status is None:
                timed_out = True
                await self.terminate(state)
                status = await self.poll(state)
            stdout, stderr = await self.read_logs(state)
            oom = bool(state.get("oom_killed"))
        finally:
            await self.terminate(state, grace=0)
            await self.release(state)
        return RunResult(
            exit_code=status if status is not None else -1,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            oom_killed=oom,
            duration=time.monotonic() - t0,
        )
