"""The mirror in the hub's configuration and in a workspace's environment
(``ecluse.mirror.hub``): a managed service with no route, one new workspace port,
pip pointed at it with the workspace's own project's token."""

from __future__ import annotations

from traitlets.config import Config

from ecluse.config import load_settings
from ecluse.dask.sizing import sizing
from ecluse.hub.hubconfig import configure
from ecluse.hub.workspace import workspace_env
from ecluse.mirror.allowlist import mirror_key, token_project
from ecluse.sandbox import UserIdentity


def _settings(make_config, monkeypatch, **overrides):
    import ecluse.sandbox

    monkeypatch.setattr(ecluse.sandbox, "sandbox_host_address",
                        lambda settings, ensure=True, caller="hub": "10.213.0.1")
    return load_settings(make_config(**{"hub.spawner": "ecluse", **overrides}))


def test_the_hub_runs_the_mirror_with_no_route_and_opens_one_port(make_config, monkeypatch):
    settings = _settings(make_config, monkeypatch, **{"mirror.enabled": True,
                                                      "dask.gateway": False})
    c = Config()
    configure(c, settings)
    (entry,) = [s for s in c.JupyterHub.services if s["name"] == "package-mirror"]
    assert "url" not in entry  # nothing of it behind the hub's public proxy
    assert entry["command"][-1] == "serve" and "mirror" in entry["command"]
    assert c.EcluseSpawner.extra_allowed_ports == [settings.airlock.port, settings.mirror.port]
    # off: no service, no port
    settings = _settings(make_config, monkeypatch, **{"dask.gateway": False})
    c = Config()
    configure(c, settings)
    assert "package-mirror" not in {s["name"] for s in c.JupyterHub.services}
    assert c.EcluseSpawner.extra_allowed_ports == [settings.airlock.port]


def test_a_workspace_gets_pip_on_the_mirror_with_its_own_projects_token(make_config,
                                                                        monkeypatch):
    settings = _settings(make_config, monkeypatch, **{"mirror.enabled": True})
    key = mirror_key(settings.mirror.resolved_data_dir(settings.state_dir))
    tokens = {}
    for slug, project in settings.projects.items():
        env = workspace_env(settings, project, UserIdentity("alice", 5001, 5001),
                            "10.213.0.1", sizing(project))
        url = env["PIP_INDEX_URL"]
        assert url.startswith(f"http://10.213.0.1:{settings.mirror.port}/")
        assert url.endswith("/simple/")
        token = url.split("/")[3]
        assert token_project(key, token) == slug
        tokens[slug] = token
        assert env["PIP_TRUSTED_HOST"] == "10.213.0.1"
        assert env["PIP_DISABLE_PIP_VERSION_CHECK"] == "1"
    assert len(set(tokens.values())) == len(settings.projects) >= 2
