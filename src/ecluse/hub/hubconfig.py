"""Build JupyterHub's configuration from Écluse settings.

``jupyterhub_config.py`` files only call :func:`configure_from_env` (or
:func:`configure`); every decision lives here, versioned and tested.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .. import sandbox
from ..config import Settings, load_settings
from ..directory import DirectoryUnavailable, check_group_names
from ..hubservice import external_entry, external_services
from ..hubservice.instances import MARK, record_removed, stop_previous
from ..i18n import N_, LanguageHandler
from ..sandbox.remote import audit_for
from ..secrets import hub_secrets
from ..statevolume import ensure_state_volume
from .reconcile import reconciler_role, reconciler_service_spec
from .roles import custom_scopes, hub_roles, workspace_token_scopes
from .services import enabled_services

#: environment read by configure_from_env (set by `ecluse up`)
ENV_CONFIG = "ECLUSE_CONFIG"
ENV_STATE_DIR = "ECLUSE_STATE_DIR"
ENV_PORT = "ECLUSE_PORT"
ENV_CLEANUP = "ECLUSE_CLEANUP_SERVERS"


def proxy_command() -> list[str]:
    """configurable-http-proxy: on PATH, or installed by `make` under node_modules/."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return [found]
    here = Path(__file__).resolve()
    candidates = [Path(sys.prefix).parent / "node_modules/.bin/configurable-http-proxy"]
    candidates += [p / "node_modules/.bin/configurable-http-proxy" for p in here.parents]
    for c in candidates:
        if c.exists():
            return [str(c)]
    raise FileNotFoundError(
        "configurable-http-proxy not found: run `make up` (installs it with npm under "
        "node_modules/) or `npm install -g configurable-http-proxy`"
    )


def sandbox_host(settings: Settings) -> str | None:
    """The sandbox host address workspaces reach the hub side on (None: no workspace
    runs on this host, or the plain development spawner)."""
    if settings.hub.spawner != "ecluse":
        return None
    return sandbox.sandbox_host_address(settings)


def hub_bind_ip(settings: Settings) -> str:
    """Where the hub API listens: an address sandboxes can route to, or loopback."""
    return sandbox_host(settings) or "127.0.0.1"


def check_directory_groups(settings: Settings) -> None:
    """At start: configured groups named by a bare name must be unique under the group
    search base (:func:`ecluse.directory.check_group_names`; raises ConfigError). When
    the directory cannot be reached, the hub starts (sign-ins wait for it anyway)."""
    import logging


    log = logging.getLogger("ecluse.hub.hubconfig")
    try:
        for line in check_group_names(settings):
            log.warning("%s", line)
    except DirectoryUnavailable as e:
        log.error("configured groups not checked against the directory: %s", e)


def configure(c: Any, settings: Settings, *, cleanup_servers: bool = True) -> None:
    """Fill a traitlets Config ``c`` for this deployment."""
    check_directory_groups(settings)
    if settings.hub.service_user and settings.hub.spawner == "ecluse" \
            and not settings.sandbox.launcher_socket:
        raise RuntimeError(
            f"hub.service_user is {settings.hub.service_user!r} but sandbox.launcher_socket "
            "is not set: a hub that is not root starts workspaces, asks the host address "
            "and writes its audit records through the sandbox launcher only")
    state = settings.state_dir
    if os.geteuid() == 0 or not settings.hub.service_user:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the databases on their own filesystem: mounted (image), checked (mounted), an
        # earlier layout moved in; the hub does not start without it
        ensure_state_volume(settings)
    else:
        # a hub of its own user (hub.service_user): the supervisor (`ecluse up`, systemd)
        # mounted the volume and made the hub's folders; the hub does not start without
        settings.db_dir  # noqa: B018 - raises when the state volume is not mounted
    hub_dir = settings.hub_dir
    hub_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.database_url is None:
        settings.hub_db_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secrets = hub_secrets(settings)
    os.environ.setdefault("JUPYTERHUB_CRYPT_KEY", secrets["crypt_key"])
    os.environ.setdefault(ENV_CONFIG, str(settings.config_file))
    os.environ.setdefault(ENV_STATE_DIR, str(state))

    hub = settings.hub
    host = sandbox_host(settings)
    internal_ip = host or "127.0.0.1"
    c.JupyterHub.ip = hub.ip
    c.JupyterHub.port = hub.port
    c.JupyterHub.hub_ip = internal_ip
    c.JupyterHub.hub_port = hub.hub_port
    in_cluster = hub.spawner == "ecluse" and settings.sandbox.backend == "kubernetes"
    if in_cluster:
        # workspace pods reach the hub pod through its Service (the backend's host
        # address); the hub API and the services listen on the pod's network, which the
        # hub's NetworkPolicy opens to sandbox pods on their ports only
        host = "0.0.0.0"
        c.JupyterHub.hub_ip = host
        c.JupyterHub.hub_connect_url = (
            f"http://{sandbox.get_backend(settings).host_address()}:{hub.hub_port}")
    c.JupyterHub.db_url = settings.hub_database_url
    c.JupyterHub.cookie_secret = bytes.fromhex(secrets["cookie_secret"])
    c.JupyterHub.pid_file = str(hub_dir / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = cleanup_servers
    c.JupyterHub.cleanup_proxy = True
    c.JupyterHub.allow_named_servers = True
    # the spawner only accepts project slugs as names; failed attempts must not
    # use up a quota of names
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.redirect_to_server = False
    # tokens users create (Token page, API) live at most this long; a token asked
    # for without an expiry gets this one (workspace tokens end with their server)
    c.JupyterHub.token_expires_in_max_seconds = hub.token_max_age
    c.JupyterHub.template_paths = [str(Path(__file__).parent / "templates")]
    # French and English (ecluse.i18n): jinja2.ext.i18n translating each page into
    # its language, and the FR|EN switch's /hub/ecluse/language/<lang>
    c.JupyterHub.jinja_environment_options = {"extensions": ["ecluse.i18n.EcluseI18n"]}
    c.JupyterHub.extra_handlers = [(r"/ecluse/language/(fr|en)", LanguageHandler)]
    c.JupyterHub.template_vars = {
        "announcement_login": N_("Écluse — sign in with your hospital account."),
        "ecluse_projects": {
            slug: {"title": p.title, "datasets": [d.name for d in p.datasets]}
            for slug, p in settings.projects.items()
        },
    }

    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = secrets["proxy_token"]
    c.ConfigurableHTTPProxy.command = proxy_command()
    c.ConfigurableHTTPProxy.pid_file = str(hub_dir / "proxy.pid")
    if hub.spawner == "ecluse":
        # workspaces: every request passes the route allow-list on the host too
        c.JupyterHub.proxy_class = "ecluse.hub.proxy.EcluseProxy"
        c.EcluseProxy.route_filter_port = hub.route_filter_port
        c.EcluseProxy.route_filter_pid_file = str(hub_dir / "route-filter.pid")

    # "ecluse": LDAP password + TOTP; "ecluse-oidc": the hospital's OpenID provider
    c.JupyterHub.authenticator_class = "ecluse-oidc" if hub.authenticator == "oidc" else "ecluse"
    c.EcluseAuthenticator.config_file = str(settings.config_file)
    c.EcluseAuthenticator.state_dir = str(state)

    configure_spawner(c, settings)

    services: list[dict] = []
    extra_user_scopes: list[str] = []
    roles_extra: list[dict] = []
    for service in enabled_services(settings):
        # services workspaces use listen where they can reach them (``host``)
        services.append(service_entry(service, settings, host))
        extra_user_scopes.extend(service.user_scopes)
        roles_extra.extend(service.roles(settings))
    if settings.sandbox.idle_timeout or settings.sandbox.max_server_age:
        services.append(idle_culler_service(settings))
        roles_extra.append(
            {
                "name": "idle-culler",
                "description": "Cull idle workspaces (jupyterhub-idle-culler)",
                "scopes": ["list:users", "read:users:activity", "read:servers",
                           "delete:servers"],
                "services": ["idle-culler"],
            }
        )
    if hub.revocation_interval:
        services.append(reconciler_service_spec(settings))
        roles_extra.append(reconciler_role(settings))
    mark_services(services, settings)
    c.JupyterHub.services = services
    # one scope per project (roles.project_scope), held by the project's hub group
    c.JupyterHub.custom_scopes = custom_scopes(settings)
    c.JupyterHub.load_roles = hub_roles(settings, extra_user_scopes) + roles_extra


def service_entry(service: Any, settings: Settings, host: str | None) -> dict:
    """The hub's entry for one managed service: started by the hub, or, when the hub runs
    as a user of its own (``hub.service_user``), an external service (URL and token)
    that the supervisor starts as its own user (:func:`external_service_token`)."""
    if not settings.hub.service_user:
        return service.spec(settings, host)
    with external_services():
        spec = service.spec(settings, host)
    return external_entry(spec, external_service_token(settings, service.name))


def external_service_token(settings: Settings, name: str) -> str:
    """The token of the external service ``name``: the supervisor wrote it in the hub's
    secrets folder (``service-token-<name>``; ``ecluse.secrets.service_token``)."""
    path = Path(settings.hub_secrets_dir) / f"service-token-{name}"
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise RuntimeError(f"hub.service_user is set but the token of the {name} service "
                           f"cannot be read from {path} ({e.strerror}): the supervisor "
                           "(`ecluse up`, the install) writes it") from None
    if not token:
        raise RuntimeError(f"{path} is empty: the {name} service has no token")
    return token


def mark_services(services: list[dict], settings: Settings) -> None:
    """Mark every service the hub starts as this deployment's
    (:data:`ecluse.hubservice.instances.MARK`): the next hub, or the service's
    next instance, finds and stops what a killed one left."""
    for spec in services:
        if spec.get("command"):
            spec["environment"] = {**spec.get("environment", {}),
                                   MARK: str(settings.state_dir.resolve())}


def stop_previous_services(settings: Settings) -> list[str]:
    """At hub start, before the hub starts its services: stop the services an earlier
    hub of this deployment left running (it was killed), and audit what was stopped."""
    stopped = stop_previous(settings.state_dir)
    if stopped:
        record_removed(audit_for(settings, "hub"), "hub", "service processes", stopped)
    return stopped


#: the culler's --timeout when workspaces are never culled for idleness (ten years)
NEVER = 10 * 365 * 86400


def idle_culler_service(settings: Settings) -> dict:
    """jupyterhub-idle-culler: idle workspaces (``sandbox.idle_timeout``) and, active or
    not, workspaces older than ``sandbox.max_server_age`` (``--max-age``)."""
    sb = settings.sandbox
    command = [
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={sb.idle_timeout or NEVER}",
        "--cull-every=60",
    ]
    if sb.max_server_age:
        command.append(f"--max-age={sb.max_server_age}")
    return {"name": "idle-culler", "command": command}


def configure_spawner(c: Any, settings: Settings) -> None:
    if settings.hub.spawner == "ecluse":
        c.JupyterHub.spawner_class = "ecluse"
        c.EcluseSpawner.config_file = str(settings.config_file)
        c.EcluseSpawner.state_dir = str(settings.state_dir)
        c.EcluseSpawner.start_timeout = settings.sandbox.start_timeout
        c.EcluseSpawner.http_timeout = settings.sandbox.start_timeout
        scopes = ["users:activity!user", "access:servers!server"]
        ports: list[int] = []
        for service in enabled_services(settings):
            # what the workspace's own token (the user's) may do with each service,
            # and the service's ports on the host address
            scopes += [s for s in service.workspace_scopes if s not in scopes]
            ports += service.workspace_ports(settings)
        c.EcluseSpawner.extra_allowed_ports = ports
        # ... plus its own project's scope: the workspace token acts for that project only
        c.EcluseSpawner.server_token_scopes = workspace_token_scopes(scopes)
        return
    # development fallback: a plain local process, no isolation
    c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    c.SimpleLocalProcessSpawner.home_dir_template = str(settings.state_dir / "homes" / "{username}")
    # the same server command as workspaces (when the workspace extension is
    # installed), so the two spawners differ by the sandbox alone
    launcher = Path(sys.executable).parent / "ecluse-singleuser"
    if not launcher.exists():
        launcher = launcher.with_name("jupyterhub-singleuser")
    # python -s, as in workspaces: ecluse-singleuser refuses a user site
    c.Spawner.cmd = [sys.executable, "-s", str(launcher)]
    if os.geteuid() == 0:
        c.Spawner.args = ["--allow-root"]


def configure_from_env(c: Any) -> Settings:
    port = os.environ.get(ENV_PORT)
    settings = load_settings(
        os.environ.get(ENV_CONFIG) or None,
        state_dir=os.environ.get(ENV_STATE_DIR) or None,
        port=int(port) if port else None,
    )
    configure(c, settings, cleanup_servers=os.environ.get(ENV_CLEANUP, "1") != "0")
    if not HUB_SUBCOMMANDS & set(sys.argv[1:]):  # the hub itself starts, not `upgrade-db`
        stop_previous_services(settings)
    return settings


#: jupyterhub commands that load the configuration but start no hub (nor services)
HUB_SUBCOMMANDS = {"upgrade-db", "token", "generate-certs", "--generate-config"}
