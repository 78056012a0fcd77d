"""The hub-managed services of Écluse, each described by its own ``hub.py``
(:class:`ecluse.hubservice.HubService`): the hub configuration and the workspace
environment loop over them."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..airlock.hub import HUB_SERVICE as AIRLOCK
from ..batch.hub import HUB_SERVICE as BATCH
from ..dask.hub import HUB_SERVICE as DASK_GATEWAY
from ..hubservice import HubService, external_environment, external_services
from ..mirror.hub import HUB_SERVICE as PACKAGE_MIRROR
from ..sandbox import sandbox_host_address

SERVICES: tuple[HubService, ...] = (AIRLOCK, BATCH, DASK_GATEWAY, PACKAGE_MIRROR)


def enabled_services(settings: Any) -> list[HubService]:
    """The services this deployment runs, in :data:`SERVICES` order."""
    return [s for s in SERVICES if s.enabled(settings)]


@dataclass(frozen=True)
class ExternalService:
    """How the supervisor (``ecluse up``, a systemd unit) starts a service the hub does
    not start (``hub.service_user``): what the hub would have run, as whom, where."""

    name: str
    command: list[str]
    env: dict[str, str]
    #: the system user it runs as (None: the supervisor's own)
    user: str | None
    cwd: str
    #: where it listens (the hub's proxy sends its users there; a service with no route,
    #: the package mirror: where workspaces reach it)
    url: str


def external_service(settings: Any, name: str, token: str,
                     environ: dict[str, str] | None = None) -> ExternalService:
    """The service ``name`` as an external service of the hub, with its API ``token``
    (the one in the hub's secrets folder). ``environ``: where the directory's service
    password is read (``ldap.bind_password_env``; default: this process's)."""
    found = [s for s in enabled_services(settings) if s.name == name]
    if not found:
        names = ", ".join(s.name for s in enabled_services(settings))
        raise ValueError(f"no service {name!r} in this deployment (its services: {names})")
    # the address the hub made (through the launcher) before the services start
    host = sandbox_host_address(settings, ensure=False) \
        if settings.hub.spawner == "ecluse" else None
    with external_services():
        spec = found[0].spec(settings, host)
    hub = settings.hub
    env = external_environment(spec, token,
                               f"http://{host or '127.0.0.1'}:{hub.hub_port}/hub/api",
                               hub.public_url)
    var = settings.ldap.bind_password_env
    environ = os.environ if environ is None else environ
    if var and environ.get(var):  # as the hub passes it (service_environment)
        env[var] = environ[var]
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return ExternalService(name, list(spec["command"]), env, spec.get("user"),
                           spec.get("cwd") or "/",
                           spec.get("url") or found[0].listen_url(settings, host) or "")
