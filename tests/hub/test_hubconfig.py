"""The hub configuration built from the settings: roles, services, spawner."""

from __future__ import annotations

from traitlets.config import Config

from ecluse.config import load_settings
from ecluse.hub.hubconfig import configure
from ecluse.hub.roles import OUTPUT_CHECKERS, STAFF, STAFF_SCOPES


def build(make_config, **overrides) -> tuple[Config, object]:
    settings = load_settings(make_config(**overrides))
    c = Config()
    configure(c, settings)
    return c, settings


def roles_by_name(c: Config) -> dict[str, dict]:
    return {r["name"]: r for r in c.JupyterHub.load_roles}


def test_staff_are_scoped_not_admin(make_config):
    c, _ = build(make_config)
    roles = roles_by_name(c)
    assert roles["ecluse-staff"]["groups"] == [STAFF]
    assert set(roles["ecluse-staff"]["scopes"]) == set(STAFF_SCOPES)
    assert "admin" not in roles
    # staff never get access to the content of researchers' workspaces
    assert not any(s.startswith(("access:servers", "admin:auth_state", "tokens", "admin:users"))
                   for s in STAFF_SCOPES)
    assert roles["ecluse-output-checker"]["groups"] == [OUTPUT_CHECKERS]


def test_staff_admin_only_when_configured(make_config):
    c, _ = build(make_config, **{"hub.staff_are_admins": True})
    assert roles_by_name(c)["admin"]["groups"] == [STAFF]


def test_idle_culler_is_a_least_privilege_service(make_config):
    c, _ = build(make_config, **{"sandbox.idle_timeout": 1800})
    culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")
    assert "--timeout=1800" in culler["command"]
    role = roles_by_name(c)["idle-culler"]
    assert role["services"] == ["idle-culler"]
    assert set(role["scopes"]) == {"list:users", "read:users:activity", "read:servers",
                                   "delete:servers"}


def test_no_culler_when_disabled(make_config):
    c, _ = build(make_config, **{"sandbox.idle_timeout": 0, "sandbox.max_server_age": 0})
    assert not any(s["name"] == "idle-culler" for s in c.JupyterHub.services)


def test_ecluse_spawner_and_authenticator_by_entry_point(make_config):
    from importlib.metadata import entry_points

    from ecluse.sandbox.local import teardown_host_network

    try:
        c, settings = build(make_config, **{"hub.spawner": "ecluse"})
    finally:
        teardown_host_network()  # the hub address of the local backend was set up
    assert c.JupyterHub.spawner_class == "ecluse"
    assert c.JupyterHub.hub_ip == "10.213.0.1"
    assert c.JupyterHub.authenticator_class == "ecluse"
    spawners = {e.name: e.value for e in entry_points(group="jupyterhub.spawners")}
    auths = {e.name: e.value for e in entry_points(group="jupyterhub.authenticators")}
    assert spawners["ecluse"] == "ecluse.hub.spawner:EcluseSpawner"
    assert auths["ecluse"] == "ecluse.hub.auth:EcluseAuthenticator"


def test_secrets_are_generated_once_with_private_modes(make_config):
    import stat

    c1, settings = build(make_config)
    secrets_dir = settings.state_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for f in secrets_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    c2 = Config()
    configure(c2, settings)
    assert c1.JupyterHub.cookie_secret == c2.JupyterHub.cookie_secret
    assert c1.ConfigurableHTTPProxy.auth_token == c2.ConfigurableHTTPProxy.auth_token


def test_the_services_are_a_loop_over_their_own_hub_entries(make_config, monkeypatch):
    """Each service's spec, roles, user scopes and workspace ports come from its own
    ``hub.py`` (``HubService``); the airlock listens on the sandbox host address
    without the settings being changed to say so."""
    import ecluse.sandbox
    from ecluse.hub.services import SERVICES

    monkeypatch.setattr(ecluse.sandbox, "sandbox_host_address",
                        lambda settings, ensure=True, caller="hub": "10.213.0.1")
    c, settings = build(make_config, **{"hub.spawner": "ecluse", "dask.gateway": True})
    names = [s["name"] for s in c.JupyterHub.services]
    assert [s.name for s in SERVICES] == ["airlock", "batch", "dask-gateway", "package-mirror"]
    assert names[:3] == ["airlock", "batch", "dask-gateway"]  # the mirror is off by default
    airlock = c.JupyterHub.services[0]
    assert airlock["url"] == f"http://10.213.0.1:{settings.airlock.port}"
    assert settings.airlock.ip == "127.0.0.1"  # nobody mutates the settings
    roles = roles_by_name(c)
    assert {"ecluse-airlock-service", "ecluse-batch-user", "ecluse-batch-service"} <= set(roles)
    user_scopes = set(roles["user"]["scopes"])
    assert {f"access:services!service={s.name}" for s in SERVICES[:3]} <= user_scopes
    assert c.EcluseSpawner.extra_allowed_ports == [
        settings.airlock.port, settings.dask.api_port, settings.dask.proxy_port]
    # a service a deployment does not run adds nothing
    monkeypatch.setenv("ECLUSE_BATCH_API_TOKEN", "t" * 32)
    c, settings = build(make_config, **{"hub.spawner": "ecluse", "dask.gateway": False,
                                        "sandbox.backend": "kubernetes"})
    assert [s["name"] for s in c.JupyterHub.services][:1] == ["airlock"]
    assert not {"dask-gateway"} & {s["name"] for s in c.JupyterHub.services}
    # on kubernetes the batch service is a Deployment of its own, known by its Service
    batch = next(s for s in c.JupyterHub.services if s["name"] == "batch")
    assert "command" not in batch and batch["api_token"] == "t" * 32
    assert batch["url"].startswith("http://ecluse-batch.ecluse.svc.cluster.local:")
    # and so is the airlock given its token: workspaces reach its Service
    monkeypatch.setenv("ECLUSE_AIRLOCK_API_TOKEN", "a" * 32)
    c, settings = build(make_config, **{"hub.spawner": "ecluse", "dask.gateway": False,
                                        "sandbox.backend": "kubernetes"})
    airlock = next(s for s in c.JupyterHub.services if s["name"] == "airlock")
    assert "command" not in airlock and airlock["api_token"] == "a" * 32
    host = f"ecluse-airlock.ecluse.svc.cluster.local:{settings.airlock.port}"
    assert airlock["url"] == f"http://{host}"
    from ecluse.airlock.hub import airlock_url

    assert airlock_url(settings, "hub.ecluse.svc.cluster.local") == (
        f"http://{host}/services/airlock/")
    assert c.EcluseSpawner.extra_allowed_ports == [settings.airlock.port]


def test_in_a_cluster_the_hub_listens_on_the_pod_and_is_reached_by_its_service(make_config):
    """sandbox.backend kubernetes: the hub API and the airlock listen on the pod's network;
    workspaces get the hub Service's name, for the hub API and for the airlock."""
    from ecluse.airlock.hub import airlock_url
    from ecluse.sandbox import get_backend

    c, settings = build(make_config, **{"hub.spawner": "ecluse", "dask.gateway": False,
                                        "sandbox.backend": "kubernetes"})
    assert c.JupyterHub.hub_ip == "0.0.0.0"
    assert c.JupyterHub.hub_connect_url == (
        f"http://hub.ecluse.svc.cluster.local:{settings.hub.hub_port}")
    airlock = next(s for s in c.JupyterHub.services if s["name"] == "airlock")
    assert airlock["url"] == f"http://0.0.0.0:{settings.airlock.port}"
    reach = get_backend(settings).reach_address()
    assert airlock_url(settings, reach) == (
        f"http://hub.ecluse.svc.cluster.local:{settings.airlock.port}/services/airlock/")


def test_a_hub_of_its_own_user_knows_the_services_as_external_ones(make_config):
    """``hub.service_user``: the hub starts no service (no command, user, environment);
    each is a URL and the token the supervisor wrote in the hub's secrets folder, and
    the supervisor starts it with the environment JupyterHub would have given it. The
    hub's own files are in ``<state>/hub``; a missing token stops the configuration."""
    import pytest

    from ecluse.hub.hubconfig import external_service_token
    from ecluse.hub.services import enabled_services, external_service
    from ecluse.secrets import service_token

    settings = load_settings(make_config(**{"hub.service_user": "ecluse-hub",
                                            "sandbox.idle_timeout": 1800}))
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in enabled_services(settings)]
    assert "airlock" in names
    with pytest.raises(RuntimeError, match="token of the airlock service cannot be read"):
        configure(Config(), settings)
    settings.hub_secrets_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (settings.hub_secrets_dir / f"service-token-{name}").write_text(
            service_token(settings.state_dir, name))
    c = Config()
    configure(c, settings)
    assert c.JupyterHub.pid_file == str(settings.state_dir / "hub" / "jupyterhub.pid")
    assert c.JupyterHub.db_url.endswith("/hub/jupyterhub.sqlite")
    entries = {s["name"]: s for s in c.JupyterHub.services}
    for name in names:
        entry = entries[name]
        assert not {"command", "user", "cwd", "environment"} & set(entry), entry
        assert entry["api_token"] == external_service_token(settings, name)
        assert entry["url"].startswith("http://")
    assert "command" in entries["idle-culler"]  # the hub's own, as its user
    svc = external_service(settings, "airlock", "t0ken", {})
    assert svc.command[1:5] == ["-m", "ecluse", "airlock", "serve"]
    assert svc.url == entries["airlock"]["url"]
    assert (svc.env["JUPYTERHUB_API_TOKEN"], svc.env["JUPYTERHUB_SERVICE_NAME"],
            svc.env["JUPYTERHUB_CLIENT_ID"], svc.env["JUPYTERHUB_SERVICE_PREFIX"]) == (
        "t0ken", "airlock", "service-airlock", "/services/airlock/")
    assert svc.env["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{settings.hub.hub_port}/hub/api"
    with pytest.raises(ValueError, match="no service 'nope'"):
        external_service(settings, "nope", "t", {})


def test_a_hub_of_its_own_user_needs_the_launcher(make_config):
    """Workspaces, the host address and the hub's audit records go through the launcher
    only: without its socket the configuration stops and says so."""
    import pytest

    settings = load_settings(make_config(**{"hub.service_user": "ecluse-hub",
                                            "hub.spawner": "ecluse"}))
    with pytest.raises(RuntimeError, match="sandbox.launcher_socket is not set"):
        configure(Config(), settings)
