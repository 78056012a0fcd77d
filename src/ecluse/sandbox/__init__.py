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

import os
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


def user_site_venv_cfg(settings: Any, folder: Path) -> Mount | None:
    """A ``pyvenv.cfg`` for the local backend's workspace environment that lets its
    Python read the user site (``~/.local``), written into ``folder``, and its read-only
    mount over the environment's own; ``None`` when that environment is no virtual
    environment (a plain Python reads its user site anyway), already does, or is the
    image's (docker, kubernetes: the image sets the key at build time).

    In a virtual environment without the system's site packages, ``site`` never adds
    the user site and pip refuses ``--user``: both read
    ``include-system-site-packages`` in ``pyvenv.cfg``; this copy sets it to ``true``.
    The hub writes it for its own sandboxes; the sandbox launcher writes its own (a hub
    of its own user names only the target: :class:`ecluse.sandbox.launcher.Policy`).
    """
    if not backend_class(settings.sandbox.backend).host_python:
        return None
    host_cfg = sandbox_python_env(settings) / "pyvenv.cfg"
    if not host_cfg.is_file():
        return None
    key = "include-system-site-packages"
    lines = host_cfg.read_text().splitlines()
    values = {ln.split("=", 1)[0].strip().lower(): ln.split("=", 1)[1].strip().lower()
              for ln in lines if "=" in ln}
    if values.get(key) == "true":
        return None
    out = [ln for ln in lines if ln.split("=", 1)[0].strip().lower() != key]
    out.append(f"{key} = true")
    text = "\n".join(out) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pyvenv.cfg"
    if not path.exists() or path.read_text() != text:
        tmp = folder / ".pyvenv.cfg.tmp"
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return Mount(path, str(host_cfg), True)


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
    "user_site_venv_cfg",
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
