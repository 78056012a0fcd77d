"""The sandbox launcher in the playbook: a root unit, the services' settings point at it.

The hub role's templates are rendered with the roles' own defaults (plain
Jinja2 with the few Ansible filters they use), then checked: the launcher
runs as root with the deployment's settings, the hub starts after it, and the
rendered ``ecluse.yaml`` loads with the launcher settings in it.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import jinja2
import pytest
import yaml

from ecluse.config import Settings

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
HUB_HOST_ROLES = ["ecluse", "common", "ldap_client", "data", "hub", "airlock", "dask_gateway"]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in (
        "true", "yes", "1")
    env.filters["to_json"] = json.dumps
    return env


def _vars(**overrides) -> dict:
    values: dict = {"ansible_managed": "Ansible managed",
                    "ansible_facts": {"service_mgr": "systemd"}}
    for role in HUB_HOST_ROLES:
        for part in ("defaults", "vars"):
            f = ANSIBLE / "roles" / role / part / "main.yml"
            if f.exists():
                values.update(yaml.safe_load(f.read_text()) or {})
    values.update(overrides)
    env = _env()

    def resolve(v):
        if isinstance(v, str) and "{{" in v:
            return env.from_string(v).render(values)
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        return v

    for _ in range(6):  # defaults refer to other defaults
        values = {k: resolve(v) for k, v in values.items()}
    return values


def render(template: str, **overrides) -> str:
    text = (ANSIBLE / "roles" / "hub" / "templates" / template).read_text()
    return _env().from_string(text).render(_vars(**overrides))


def _unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string(text)
    return unit


def test_the_launcher_unit_runs_as_root_with_the_deployment_settings():
    unit = _unit(render("ecluse-sandbox-launcher.service.j2", hub_launcher=True))
    service = unit["Service"]
    assert service["User"] == "root"
    assert service["ExecStart"] == ("/opt/ecluse/venv/bin/ecluse sandbox launcher --config "
                                    "/etc/ecluse/ecluse.yaml")
    assert service["KillMode"] == "process"  # long-running sandboxes outlive a restart
    assert unit["Unit"]["Before"] == "ecluse-hub.service"


@pytest.mark.parametrize("enabled", [True, False])
def test_the_hub_starts_after_the_launcher_when_there_is_one(enabled):
    unit = _unit(render("ecluse-hub.service.j2", hub_launcher=enabled))
    wants = unit["Unit"]["Wants"].split()
    assert ("ecluse-sandbox-launcher.service" in wants) is enabled
    assert ("ecluse-sandbox-launcher.service" in unit["Unit"].get("After", "")) is enabled


def test_the_rendered_settings_point_the_services_at_the_launcher():
    callers = {"hub": "root", "airlock": "ecluse-airlock", "batch": "root", "dask": "root"}
    text = render("ecluse.yaml.j2", hub_launcher=True, hub_launcher_callers=callers)
    settings = Settings.model_validate(yaml.safe_load(text))
    sb = settings.sandbox
    assert str(sb.launcher_socket) == "/run/ecluse-services/sandbox-launcher.sock"
    assert sb.launcher_group == "ecluse-sandbox"
    assert sb.launcher_callers == callers
    off = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2")))
    assert off.sandbox.launcher_socket is None and off.sandbox.launcher_callers == {}
