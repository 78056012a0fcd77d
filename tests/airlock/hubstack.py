"""A real JupyterHub with the hub-managed airlock service, for API and browser tests.

:class:`AirlockHub` (a :class:`~tests.support.hubservice.ServiceHub`) writes an
``ecluse.yaml``/``projects.yaml`` pair and a ``jupyterhub_config.py`` into a
temporary folder, starts ``jupyterhub`` (which starts configurable-http-proxy
and ``ecluse airlock serve``) on free loopback ports, and stops everything
(process group) and deletes the folder. Users sign in through the hub's login
form (:class:`~tests.support.doubles.GroupsFromConfigAuthenticator`); API
tokens are minted by a ``test-admin`` service through the hub REST API.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import requests
import yaml

from ..support.hubservice import ServiceHub, password
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


class AirlockHub(ServiceHub):
    service = "airlock"
    users = USERS
    token_scopes = ["access:services!service=airlock", "read:users:groups!user"]
    tmp_prefix = TMP_PREFIX + "hub-"

    def __init__(self) -> None:
        super().__init__()
        self.airlock_url = self.service_url
        self.state_dir = self.root / "state"

    def ecluse_config(self) -> Path:
        (self.root / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
        cfg = self.root / "ecluse.yaml"
        cfg.write_text(yaml.safe_dump(ECLUSE_YAML))
        return cfg

    def kill_leftovers(self) -> None:
        _kill_matching(str(self.root))

    def api(self, user: str, **kw) -> ApiClient:
        return ApiClient(f"{self.airlock_url}/api/v1", self.token(user, **kw))


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"

    def __getattr__(self, method: str):
        if method not in ("get", "post", "delete", "put"):
            raise AttributeError(method)

        def call(path: str, **kw):
            kw.setdefault("timeout", 30)
            return getattr(self.s, method)(self.base + path, **kw)

        return call


def _kill_matching(text: str) -> None:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if text in args and pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
