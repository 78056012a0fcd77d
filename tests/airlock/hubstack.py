"""The airlock suite's hub: the one harness, with the hub-managed airlock service.

:class:`AirlockHub` is :class:`tests.support.hubstack.HubStack` (``ecluse.dev.stack.Stack``:
the hub configuration of every deployment) on an ``ecluse.yaml``/``projects.yaml``
pair written into a temporary folder, with free loopback ports. Users sign in
through the hub's login form with hub groups from :data:`USERS`
(:class:`~tests.support.doubles.GroupsFromConfigAuthenticator`); API tokens are
minted by the harness's ``test-admin`` service. Stopped (hub, proxy, services)
and deleted afterwards.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import requests
import yaml

from ecluse.dev.ldapserver import free_port

from ..support.hubstack import HubStack, password
from .pgserver import TMP_PREFIX

__all__ = ["ECLUSE_YAML", "PROJECTS", "USERS", "AirlockHub", "ApiClient", "password"]

USERS: dict[str, list[str]] = {
    "alice": ["cardio-los"],  # researcher
    "bob": ["cardio-los"],  # another researcher of the same project
    "carol": ["output-checkers"],
    "dan": ["output-checkers"],
    "erin": ["output-checkers", "cardio-los"],  # checker who is a project member
    "sam": ["staff"],
    "eve": [],  # signed-in user in no project
    "ada": ["cardio-los", "air-quality"],  # researcher in two projects
    "quinn": ["cardio-los"],  # fills their staging quota (test_api_quota)
}


PROJECTS = {
    "projects": {
        "cardio-los": {"title": "Cardiac LOS", "ldap_group": "proj-cardio-los"},
        "air-quality": {
            "title": "Air quality", "ldap_group": "proj-air-quality",
            "members_may_review": True,
        },
    }
}

ECLUSE_YAML = {
    "state_dir": "state",
    "projects_file": "projects.yaml",
    "ldap": {
        "uri": "ldap://127.0.0.1:1",
        "security": "none",
        "base_dn": "dc=test",
        "bind_dn": "cn=svc,dc=test",
        "user_search_base": "ou=people,dc=test",
        "group_search_base": "ou=groups,dc=test",
    },
    # small enough for a test to reach; every other test's uploads stay far below it
    # users sign in from a test double, the directory above is unreachable: reviewers
    # are told apart by hub name here (tests/hub/test_auth_one_person.py: by person)
    "airlock": {"staging_quota_bytes": "4M", "reviewers_by": "name"},
}


def airlock_config(directory: Path) -> Path:
    """:data:`ECLUSE_YAML` and :data:`PROJECTS` in ``directory``, on free loopback ports;
    a plain process spawner and no other service (the workspaces, dask-gateway and the
    culler are not what these tests are about)."""
    (directory / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    data = yaml.safe_load(yaml.safe_dump(ECLUSE_YAML))
    port = free_port()
    data["hub"] = {"ip": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
                   "hub_port": free_port(), "proxy_api_port": free_port(),
                   "spawner": "simple"}
    data["airlock"].update(ip="127.0.0.1", port=free_port())
    # these tests read each upload's verdict from its answer: checked before it answers
    # (background checks: tests/airlock/test_service_background.py, the export flow)
    data["airlock"].setdefault("check_in_background", False)
    data["sandbox"] = {"idle_timeout": 0, **data.get("sandbox", {})}
    data["dask"] = {"gateway": False}
    cfg = directory / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


class AirlockHub(HubStack):
    """JupyterHub + proxy + the airlock service, in a temporary folder."""

    def __init__(self) -> None:
        root = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "hub-"))
        os.chmod(root, 0o755)
        super().__init__(
            airlock_config(root), users=USERS, wait_for=("airlock",), root=root,
            token_scopes=["access:services!service=airlock", "read:users:groups!user"])
        self.airlock_url = self.service_url("airlock")

    def api(self, user: str, **kw) -> ApiClient:
        return ApiClient(f"{self.airlock_url}/api/v1", self.token(user, **kw))


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"

    def __getattr__(self, method: str):
        if method not in ("get", "post", "delete", "put", "patch"):
            raise AttributeError(method)

        def call(path: str, **kw):
            kw.setdefault("timeout", 30)
            return getattr(self.s, method)(self.base + path, **kw)

        return call
