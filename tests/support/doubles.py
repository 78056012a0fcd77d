"""Test doubles for the hub service tests (real subclasses, named by behaviour).

The hub of :class:`hubstack.HubStack` with ``users=`` loads them by name
(``jupyterhub_config.py`` puts this folder on its ``sys.path``).

:class:`GroupsFromConfigAuthenticator` is a real JupyterHub
``Authenticator``: users and passwords come from config and each login sets the
user's hub groups (``manage_groups``), exactly as the LDAP authenticator does
from the directory.
"""

from __future__ import annotations

import hmac
from typing import Any

from jupyterhub.auth import Authenticator
from traitlets import Dict, Unicode


class GroupsFromConfigAuthenticator(Authenticator):
    """Password check against ``passwords``; hub groups from ``user_groups``."""

    passwords = Dict(Unicode(), help="username -> password").tag(config=True)
    user_groups = Dict(help="username -> list of hub group names").tag(config=True)

    async def authenticate(self, handler, data):
        name = data.get("username", "")
        expected = self.passwords.get(name)
        if expected is None or not hmac.compare_digest(
            expected.encode(), str(data.get("password", "")).encode()
        ):
            return None
        return {"name": name, "groups": list(self.user_groups.get(name, []))}


class HubGroup:
    """A hub group as the spawner reads it (its name)."""

    def __init__(self, name: str):
        self.name = name


class SignedInUser:
    """What the spawner reads of a hub user: name, URL, hub groups, auth state
    (alice's uid and gid, and cardio-los's project group)."""

    def __init__(self, name: str, groups: list[str]):
        self.name = self.escaped_name = name
        self.url = f"/user/{name}/"
        self.groups = [HubGroup(g) for g in groups]

    async def get_auth_state(self) -> dict[str, Any]:
        return {"uid_number": 20001, "gid_number": 20001,
                "project_gids": {"cardio-los": 30001}}
