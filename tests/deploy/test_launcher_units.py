"""The sandbox launcher in the playbook: a root unit, the services' settings point at it.

And who runs as whom: every unit names its user; the airlock, started by the
hub, runs as its own user (``hub_airlock_user``) with the launcher on.

The hub role's templates are rendered with the roles' own defaults (plain
Jinja2 with the few Ansible filters they use), then checked: the launcher
runs as root with the deployment's settings, the hub starts after it, and the
rendered ``ecluse.yaml`` loads with the launcher settings in it.
"""

from __future__ import annotations

import ast
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

    def resolve(v, current):
        if isinstance(v, str) and "{{" in v:
            return env.from_string(v).render(current)
        if isinstance(v, list):
            return [resolve(x, current) for x in v]
        if isinstance(v, dict):
            return {k: resolve(x, current) for k, x in v.items()}
        return v

    raw = dict(values)
    for _ in range(6):  # defaults refer to other defaults: each from its template, as
        values = {k: resolve(v, values) for k, v in raw.items()}  # Ansible does, lazily
    return values


def render(template: str, role: str = "hub", **overrides) -> str:
    text = (ANSIBLE / "roles" / role / "templates" / template).read_text()
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
    off = Settings.model_validate(yaml.safe_load(render(
        "ecluse.yaml.j2", ecluse_airlock_user="", ecluse_dask_user="", ecluse_batch_user="",
        ecluse_hub_user="")))
    assert off.sandbox.launcher_socket is None and off.sandbox.launcher_callers == {}
    assert off.airlock.service_user is None and off.dask.service_user is None
    assert off.batch.service_user is None and off.hub.service_user is None


def _task(role: str, name: str) -> dict:
    tasks = yaml.safe_load((ANSIBLE / "roles" / role / "tasks" / "configure.yml").read_text())
    [task] = [t for t in tasks if t["name"].startswith(name)]
    return task


def _rendered(value: str, **overrides) -> str:
    return _env().from_string(value).render(_vars(**overrides))


@pytest.mark.parametrize(("role", "template", "user"), [
    ("hub", "ecluse-hub.service.j2", "ecluse-hub"),
    ("hub", "ecluse-hub-prepare.service.j2", "root"),
    ("hub", "ecluse-sandbox-launcher.service.j2", "root"),
    ("dask_gateway", "ecluse-dask-gateway.service.j2", "root"),
])
def test_every_service_unit_names_its_user(role, template, user):
    unit = _unit(render(template, role=role, hub_launcher=True))
    assert unit["Service"]["User"] == user


def test_the_airlock_runs_as_its_own_user_with_the_launcher_by_default():
    settings = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2")))
    assert settings.airlock.service_user == "ecluse-airlock"
    assert settings.sandbox.launcher_socket is not None
    assert settings.sandbox.launcher_callers["airlock"] == "ecluse-airlock"
    assert settings.sandbox.launcher_callers["hub"] == "ecluse-hub"
    hub = _unit(render("ecluse-hub.service.j2"))
    assert "ecluse-sandbox-launcher.service" in hub["Unit"]["Wants"].split()
    users = _task("hub", "Create the services' system users")
    assert _rendered(users["ansible.builtin.user"]["name"], item="x") == "x"
    assert ast.literal_eval(_rendered(users["loop"])) == ["ecluse-airlock", "ecluse-dask",
                                                          "ecluse-batch"]
    # the launcher's group only: not the group reading the secrets, nor the audit keys'
    assert [_rendered(g) for g in users["ansible.builtin.user"]["groups"]] == ["ecluse-sandbox"]
    staging = _task("hub", "Give the airlock's user its staging area")["ansible.builtin.file"]
    assert _rendered(staging["owner"]) == "ecluse-airlock" and staging["mode"] == "0700"
    airlock = _task("airlock", "Create the staging area")["ansible.builtin.file"]
    assert _rendered(airlock["owner"]) == "ecluse-airlock"  # both roles agree: idempotent


def test_dask_gateway_runs_as_its_own_user_with_the_launcher_by_default():
    settings = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2")))
    assert settings.dask.service_user == "ecluse-dask"
    assert settings.sandbox.launcher_callers["dask"] == "ecluse-dask"
    assert settings.sandbox.launcher_callers["batch"] == "ecluse-batch"
    # the gateway alone with a user of its own: the launcher is on all the same
    alone = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2",
                                                          ecluse_airlock_user="")))
    assert alone.sandbox.launcher_socket is not None and alone.airlock.service_user is None
    assert alone.sandbox.launcher_callers["dask"] == "ecluse-dask"
    users = _task("hub", "Create the services' system users")
    assert ast.literal_eval(_rendered(users["loop"], ecluse_airlock_user="",
                                      ecluse_batch_user="")) == ["ecluse-dask"]
    off = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2", ecluse_dask_user="")))
    assert off.dask.service_user is None and off.sandbox.launcher_callers["dask"] == "root"


@pytest.mark.parametrize(("service_users", "modes"), [
    (("ecluse-airlock", "ecluse-dask", "ecluse-batch", "ecluse-hub"),
     ("0711", "0751", "0751", "0644")),
    (("", "ecluse-dask", "", ""), ("0711", "0751", "0751", "0644")),
    (("", "", "ecluse-batch", ""), ("0711", "0751", "0751", "0644")),
    (("", "", "", "ecluse-hub"), ("0711", "0751", "0751", "0644")),
    (("", "", "", ""), ("0700", "0750", "0750", "0640")),
])
def test_the_folders_the_service_users_must_traverse(service_users, modes):
    """Traversable (never listable) where the services' own users must reach their
    folders, the settings and the launcher's socket by path; private otherwise."""
    v = {"ecluse_airlock_user": service_users[0], "ecluse_dask_user": service_users[1],
         "ecluse_batch_user": service_users[2], "ecluse_hub_user": service_users[3]}
    state = _task("ecluse", "Create the state directory")["ansible.builtin.file"]["mode"]
    config = _task("ecluse", "Create the configuration directory")["ansible.builtin.file"]
    run = _task("ecluse", "Create the run directory")["ansible.builtin.file"]["mode"]
    settings = _task("hub", "Write the deployment settings")
    [yaml_mode] = [i["mode"] for i in settings["loop"] if i["name"] == "ecluse.yaml"]
    assert tuple(_rendered(m, **v) for m in (state, config["mode"], run, yaml_mode)) == modes


def test_the_batch_service_runs_as_its_own_user_with_the_launcher_by_default():
    settings = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2")))
    assert settings.batch.service_user == "ecluse-batch"
    assert settings.sandbox.launcher_callers["batch"] == "ecluse-batch"
    folders = _task("hub", "Give the batch service's user its record store")
    spec = folders["ansible.builtin.file"]
    assert _rendered(spec["owner"]) == "ecluse-batch" and spec["mode"] == "0700"
    assert [_rendered(p).rsplit("/", 1)[1] for p in folders["loop"]] == ["batch-records",
                                                                         "batch"]
    # the batch service alone with a user of its own: the launcher is on all the same
    alone = Settings.model_validate(yaml.safe_load(render(
        "ecluse.yaml.j2", ecluse_airlock_user="", ecluse_dask_user="")))
    assert alone.sandbox.launcher_socket is not None
    assert alone.sandbox.launcher_callers["batch"] == "ecluse-batch"
    off = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2", ecluse_batch_user="")))
    assert off.batch.service_user is None and off.sandbox.launcher_callers["batch"] == "root"


def test_the_hub_runs_as_its_own_user_prepared_by_root_with_its_services_in_units():
    """The production hub as ecluse-hub (hub_service_user): hub.service_user and the
    launcher's hub caller in the settings, the user in the launcher's group only (not the
    secrets' group, not the audit keys'), the hub's unit requires the root unit that
    mounts the state volume, and each service has a unit of its own, as its user, its
    token given by systemd from the root-only copy."""
    settings = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2")))
    assert settings.hub.service_user == "ecluse-hub"
    assert settings.sandbox.launcher_callers["hub"] == "ecluse-hub"
    assert settings.sandbox.launcher_socket is not None
    hub = _unit(render("ecluse-hub.service.j2"))
    assert hub["Service"]["User"] == "ecluse-hub"
    assert hub["Unit"]["Requires"] == "ecluse-hub-prepare.service"
    assert set(hub["Unit"]["After"].split()) == {"ecluse-hub-prepare.service",
                                                 "ecluse-sandbox-launcher.service"}
    prepare = _unit(render("ecluse-hub-prepare.service.j2"))
    assert (prepare["Service"]["User"], prepare["Service"]["Type"]) == ("root", "oneshot")
    assert prepare["Service"]["ExecStart"] == (
        "/opt/ecluse/venv/bin/ecluse hub-prepare --config /etc/ecluse/ecluse.yaml")
    assert prepare["Unit"]["Before"] == "ecluse-hub.service"
    user = _task("hub", "Create the hub's system user")
    assert _rendered(user["ansible.builtin.user"]["name"]) == "ecluse-hub"
    assert [_rendered(g) for g in user["ansible.builtin.user"]["groups"]] == ["ecluse-sandbox"]
    services = _vars()["hub_external_services"]
    assert [(s["name"], s["user"]) for s in services] == [
        ("airlock", "ecluse-airlock"), ("batch", "ecluse-batch"),
        ("dask-gateway", "ecluse-dask")]
    for item in services:
        unit = _unit(render("ecluse-hub-service.service.j2", item=item))
        svc = unit["Service"]
        assert svc["User"] == item["user"] != "ecluse-hub"
        assert svc["ExecStart"] == (f"/opt/ecluse/venv/bin/ecluse service {item['name']} "
                                    "--config /etc/ecluse/ecluse.yaml")
        assert svc["LoadCredential"] == (
            f"token:/var/lib/ecluse/secrets/service-token-{item['name']}")
        assert "ecluse-hub.service" in unit["Unit"]["After"].split()
    # a service without a user of its own runs as root, never as the hub's user
    unit = _unit(render("ecluse-hub-service.service.j2", item={"name": "airlock", "user": ""}))
    assert unit["Service"]["User"] == "root"
    # the jupyterhub_config.py the hub's user reads holds no secret: readable
    settings_task = _task("hub", "Write the deployment settings")
    [mode] = [i["mode"] for i in settings_task["loop"] if i["name"] == "jupyterhub_config.py"]
    assert _rendered(mode) == "0644"
    # ecluse_hub_user "": the hub is root's, as before, and starts the services itself
    old = Settings.model_validate(yaml.safe_load(render("ecluse.yaml.j2", ecluse_hub_user="")))
    assert old.hub.service_user is None and old.sandbox.launcher_callers["hub"] == "root"
    assert _unit(render("ecluse-hub.service.j2", ecluse_hub_user=""))["Service"]["User"] == "root"
