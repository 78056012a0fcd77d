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
    c, settings = build(make_config, **{"hub.spawner": "ecluse", "dask.gateway": False,
                                        "sandbox.backend": "kubernetes"})
    assert [s["name"] for s in c.JupyterHub.services][:1] == ["airlock"]
    assert not {"batch", "dask-gateway"} & {s["name"] for s in c.JupyterHub.services}
    assert c.EcluseSpawner.extra_allowed_ports == [settings.airlock.port]
