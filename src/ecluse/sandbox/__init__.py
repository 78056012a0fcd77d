"""Sandboxes: run a command in project P's isolated environment as user U.

>>> from ecluse.sandbox import get_backend, SandboxSpec, UserIdentity
>>> sandbox = get_backend(settings)
>>> state = await sandbox.start(SandboxSpec(project, UserIdentity("alice", 5001, 5001),
...                                         ["jupyterhub-singleuser"], port=8888,
...                                         allowed_ports=[8081]))
>>> await sandbox.poll(state)      # None while running
>>> await sandbox.stop(state)

Backends: ``local`` (bubblewrap + network namespace + cgroups, this host),
``docker`` (containers of a Docker engine on this host, on the same address
plan and firewall) and ``kubernetes`` (translates the same specification into
a KubeSpawner pod spec and manifests). See docs/sandbox.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .base import (
    IMAGE_PYTHON_ENV,
    Mount,
    ProjectPaths,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxSpec,
    UserIdentity,
    backend_class,
)
from .network import Subnet


def sandbox_host_address(settings: Any, *, ensure: bool = True,
                         caller: str = "hub") -> str | None:
    """Where host services that sandboxes use must listen, for ``settings``' backend.

    The host address of ``sandbox.subnet`` for a backend whose sandboxes run on
    this host (``Sandbox.on_host``: local, docker), asked of that backend
    (``ensure``: it creates the interface and the firewall table when missing —
    through the launcher, as ``caller``, when ``sandbox.launcher_socket`` is
    set: the service need not be root); None for a backend whose sandboxes do
    not run on this host (kubernetes). The one source of this address for
    callers that hold no sandbox (a sandbox's own: :meth:`Sandbox.reach_address`).
    """
    if not backend_class(settings.sandbox.backend).on_host:
        return None
    if ensure:
        return sandbox_for(settings, caller).host_address()
    return Subnet(settings.sandbox.subnet).host_address


def sandbox_python_env(settings: Any) -> Path:
    """The workspace Python environment as sandboxes of ``settings``' backend see it.

    This host's (``sandbox.python_env``, default: the environment running Écluse)
    for a backend whose sandboxes run it (``Sandbox.host_python``: local), else the
    workspace image's (:data:`IMAGE_PYTHON_ENV`: docker, kubernetes). The one source
    of the interpreter, ``papermill`` and ``dask`` that the spawner, batch runs and
    Dask clusters start inside a sandbox.
    """
    if backend_class(settings.sandbox.backend).host_python:
        return Path(settings.sandbox.python_env or sys.prefix)
    return IMAGE_PYTHON_ENV


def get_backend(settings: Any, **kwargs: Any) -> Sandbox:
    """The backend chosen by ``settings.sandbox.backend``, configured from ``settings``."""
    return backend_class(settings.sandbox.backend)(settings=settings, **kwargs)


def sandbox_for(settings: Any, caller: str) -> Sandbox:
    """The sandboxes a service (``caller``: hub, airlock, batch, dask) starts: through the
    privileged launcher when ``sandbox.launcher_socket`` is set (the service then needs no
    privilege, and the launcher's policy for ``caller`` applies), else
    ``sandbox.backend`` directly (the service must run as root for ``local``)."""
    if settings.sandbox.launcher_socket:
        # deferred: the launcher's client and the audit log it records to, when configured
        from .remote import LauncherSandbox

        return LauncherSandbox(settings=settings, caller=caller)
    return get_backend(settings)


__all__ = [
    "IMAGE_PYTHON_ENV",
    "Mount",
    "ProjectPaths",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxSpec",
    "UserIdentity",
    "backend_class",
    "get_backend",
    "sandbox_for",
    "sandbox_host_address",
    "sandbox_python_env",
]
