"""What a JupyterHub-managed service of Écluse shares (the airlock, the batch service).

* :class:`ServiceError` — the base of a service's domain exceptions;
* :class:`HubService` — what a service gives the hub configuration (its entry,
  roles, scopes, the ports and environment of workspaces); each service's
  ``hub.py`` defines one, and ``ecluse.hub.hubconfig`` loops over them;
* :func:`service_spec` — the hub's service entry;
* :func:`service_environment` — what every hub-managed service needs from
  the hub's environment (the one place that says so);
* :mod:`.web` — the tornado side: hub authentication, the base handler,
  error rendering, start-up (imported only by the services' web layers).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class ServiceError(Exception):
    """An error the user may see; subclasses set ``status`` and ``code``."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, log_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log_message = log_message or message

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "status": self.status, "message": self.message}}


def _nothing(*args: Any) -> Any:
    return ()


@dataclass(frozen=True)
class HubService:
    """What a hub-managed service gives the hub configuration (one per service ``hub.py``).

    ``host`` is the sandbox host address (None: workspaces do not run on this
    host): where the hub side listens for workspaces, given by the sandbox backend.
    """

    name: str
    #: does this deployment run the service (``settings`` → bool)
    enabled: Callable[[Any], bool]
    #: the ``c.JupyterHub.services`` entry (``settings, host`` → dict)
    spec: Callable[[Any, str | None], dict[str, Any]]
    #: the service's own roles for ``c.JupyterHub.load_roles`` (``settings`` → list)
    roles: Callable[[Any], list[dict[str, Any]]] = _nothing
    #: extra scopes of the hub's ``user`` role
    user_scopes: tuple[str, ...] = ()
    #: extra scopes of a workspace's own token (``Spawner.server_token_scopes``)
    workspace_scopes: tuple[str, ...] = ()
    #: ports on the host address workspaces may reach (``settings`` → ports)
    workspace_ports: Callable[[Any], tuple[int, ...]] = _nothing
    #: what a workspace needs in its environment to reach it (``settings, host`` → env)
    workspace_env: Callable[[Any, str | None], dict[str, str]] = lambda settings, host: {}
    #: where a service with no ``url`` (nothing of it behind the hub's proxy) listens, as
    #: a URL (``settings, host`` → str | None): what its supervisor waits for
    listen_url: Callable[[Any, str | None], str | None] = lambda settings, host: None


def service_environment(settings: Any) -> dict[str, str]:
    """The environment every hub-managed Écluse service is started with.

    JupyterHub starts a managed service with a bare environment (``PATH``,
    ``LANG``... and the service's ``environment``), not the hub's: whatever a
    service needs from the hub's environment is listed here, once, for every
    service (airlock, batch, dask-gateway): the config file and state folder,
    and the directory's service account password when the deployment passes it
    in the environment (``ldap.bind_password_env``, as ``ecluse up`` and the
    systemd unit do). The password is passed on, never written to a file.
    """
    env = {"ECLUSE_STATE_DIR": str(settings.state_dir)}
    if getattr(settings, "config_file", None):
        env["ECLUSE_CONFIG"] = str(settings.config_file)
    ldap = getattr(settings, "ldap", None)
    var = getattr(ldap, "bind_password_env", None)
    if var and os.environ.get(var):
        env[var] = os.environ[var]
    return env


def service_spec(name: str, settings: Any, conf: Any, *, description: str,
                 display: bool) -> dict[str, Any]:
    """The entry for ``c.JupyterHub.services`` of a hub-managed service.

    The hub runs ``ecluse <name> serve`` with the deployment's config file and
    state folder, in :func:`service_environment`; the service listens on
    ``conf.ip``:``conf.port``.
    """
    command = [sys.executable, "-m", "ecluse", name, "serve"]
    if getattr(settings, "config_file", None):
        command += ["--config", str(settings.config_file)]
    command += ["--state-dir", str(settings.state_dir)]
    spec = {
        "name": name,
        "display": display,
        "info": {"description": description},
        "url": f"http://{conf.ip}:{conf.port}",
        "command": command,
        # the config file, the state folder and the directory's service password
        "environment": service_environment(settings),
    }
    return spec


def service_user_entry(name: str, key: str) -> dict[str, str]:
    """The ``user`` and ``cwd`` of the service entry running it as the system user ``name``.

    Fails closed (:class:`ValueError`) when the user does not exist or the hub
    cannot switch to it (not root): the hub would otherwise start the service
    as itself, or not at all, with a less clear error.
    """
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"{key} {name!r} is not a user on this machine "
                         f"(create it: useradd --system {name})") from None
    if os.geteuid() != 0 and not _external.get():
        raise ValueError(f"{key} {name!r} is set but the hub does not run as "
                         "root: it cannot start the service as another user")
    # "/" rather than the hub's folder (the state directory, which the user may not read)
    return {"user": name, "cwd": "/"}


def service_user_cannot_run(name: str, python: str | None = None,
                            reach: tuple[str, ...] = ()) -> str | None:
    """Why the system user ``name`` cannot run the service's Python (None: it can).

    Runs ``python -I -c "import ecluse"`` as that user (its groups, from ``/``), the way
    the hub will start the service: a virtualenv whose interpreter lives under a
    private home (``/root``, mode 0700) is not reachable by another user. ``reach``:
    paths it must also get to (a folder: found; a file: read), such as the state
    directory under a private temporary folder. Root only.
    """
    import pwd
    import subprocess
    import sys

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return f"{name!r} is not a user on this machine"
    python = python or sys.executable
    gids = os.getgrouplist(name, entry.pw_gid)

    def become() -> None:
        os.setgid(entry.pw_gid)
        os.setgroups(gids)
        os.setuid(entry.pw_uid)

    try:
        proc = subprocess.run([python, "-I", "-c", REACH, *reach], preexec_fn=become,
                              cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{name!r} cannot run {python}: {e}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        also = f" and reach {', '.join(reach)}" if reach else ""
        return f"{name!r} cannot run {python} with ecluse{also}: {last}"
    return None


#: run as the service user: Écluse imports, and each path given is reached
REACH = """import os, sys
import ecluse
for p in sys.argv[1:]:
    if os.path.isdir(p):
        os.stat(p)
    else:
        open(p, "rb").close()
"""


#: set while the hub's services are described as external ones (:func:`external_services`)
_external: contextvars.ContextVar[bool] = contextvars.ContextVar("external", default=False)

#: keys of a service entry that only a service the hub starts has
STARTED_BY_HUB = ("command", "environment", "user", "cwd")


@contextlib.contextmanager
def external_services() -> Iterator[None]:
    """Describe services that the hub does not start (``hub.service_user``: the
    supervisor, ``ecluse up`` or systemd, starts them as their users): a service's
    ``user`` is then not the hub's to switch to, and root is not asked of the hub."""
    token = _external.set(True)
    try:
        yield
    finally:
        _external.reset(token)


def external_entry(spec: dict[str, Any], api_token: str) -> dict[str, Any]:
    """The hub's entry for a service it does not start: ``spec`` without what starting
    it needs, with the token the supervisor gives the service (JupyterHub registers
    the token and the service's OAuth client from it)."""
    entry = {k: v for k, v in spec.items() if k not in STARTED_BY_HUB}
    entry["api_token"] = api_token
    return entry


def external_environment(spec: dict[str, Any], api_token: str, hub_api_url: str,
                         public_url: str | None = None) -> dict[str, str]:
    """The environment the supervisor starts an external service with: its own
    ``environment`` and what JupyterHub gives a service it starts itself (name, URL,
    prefix, token, OAuth client and callback, the hub API), so that the service runs
    the same either way."""
    name = spec["name"]
    prefix = f"/services/{name}/"
    client_id = spec.get("oauth_client_id") or f"service-{name}"
    access = [f"access:services!service={name}"]
    env = {
        **spec.get("environment", {}),
        "JUPYTERHUB_SERVICE_NAME": name,
        "JUPYTERHUB_API_TOKEN": api_token,
        "JPY_API_TOKEN": api_token,
        "JUPYTERHUB_CLIENT_ID": client_id,
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": spec.get("oauth_redirect_uri")
        or f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_SCOPES": json.dumps(access),
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(access),
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": json.dumps(
            spec.get("oauth_client_allowed_scopes", [])),
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    if spec.get("url"):
        env["JUPYTERHUB_SERVICE_URL"] = spec["url"]
    if public_url:
        env["JUPYTERHUB_PUBLIC_URL"] = public_url.rstrip("/") + prefix
    return env
