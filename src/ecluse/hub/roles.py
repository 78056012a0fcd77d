"""Who is who: LDAP groups → hub groups → JupyterHub RBAC roles.

The directory decides everything. A user's hub groups are recomputed from
LDAP at every sign-in and refresh:

* one hub group per project the user is a member of, named by the project's
  slug (``cardio-los``);
* ``output-checkers`` for members of ``ldap.output_checker_group``;
* ``staff`` for members of ``ldap.staff_group``.

Roles are attached to these groups with least privilege (:func:`hub_roles`).

A credential acts for one project (docs/threat-model.md): each project has a
custom scope ``custom:ecluse:project:<slug>`` (:func:`project_scope`), held
by the members of its hub group (role ``ecluse-project-<slug>``). The hub
intersects a token's scopes with its owner's at every use, so a token names
a project only while its owner is a member. A workspace's token
(``JUPYTERHUB_API_TOKEN``) carries its own project's scope only; a token made
on the Token page acts for no project unless the user asks for exactly one
project's scope, without ``tokens``. The services read the token's scopes from the hub
(``/hub/api/user``) and decide with :func:`credential_projects`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..directory import group_key, projects_of

OUTPUT_CHECKERS = "output-checkers"
STAFF = "staff"
ROLE_GROUPS = (OUTPUT_CHECKERS, STAFF)

#: scopes of platform staff: manage servers and see users, no blanket admin,
#: no access to the content of researchers' workspaces
STAFF_SCOPES = [
    "admin-ui",
    "list:users",
    "read:users",
    "read:users:activity",
    "read:groups",
    "list:groups",
    "read:servers",
    "delete:servers",
    "read:roles:users",
    "read:roles:groups",
]

#: output checkers only need to reach the airlock service (granted to every user)
OUTPUT_CHECKER_SCOPES = ["read:users:name!user", "read:groups:name!user"]


def hub_groups_for(directory_groups: list[str], settings: Any) -> tuple[list[str], list[str]]:
    """Map LDAP group names and DNs (``DirectoryUser.memberships``) to (project slugs,
    role groups)."""
    projects = projects_of(directory_groups, settings)
    roles = []
    if group_key(settings.ldap.output_checker_group) in directory_groups:
        roles.append(OUTPUT_CHECKERS)
    if group_key(settings.ldap.staff_group) in directory_groups:
        roles.append(STAFF)
    return projects, roles


PROJECT_SCOPE_PREFIX = "custom:ecluse:project:"

def project_scope(slug: str) -> str:
    """The custom scope that lets a credential act for project ``slug``."""
    return PROJECT_SCOPE_PREFIX + slug


def scope_projects(scopes: Iterable[str]) -> frozenset[str]:
    """Projects named by the project scopes among ``scopes`` (filters ignored)."""
    out = set()
    for scope in scopes or ():
        if isinstance(scope, str) and scope.startswith(PROJECT_SCOPE_PREFIX):
            out.add(scope[len(PROJECT_SCOPE_PREFIX):].split("!", 1)[0])
    return frozenset(out)


def credential_projects(scopes: Iterable[str], *, token: bool) -> frozenset[str]:
    """The projects a credential may act for, from its (hub-resolved) scopes.

    An API token (``token=True``: ``Authorization`` header) acts for one
    project: the one its scopes name, or none when they name none or several,
    or when it can create tokens (``tokens`` on its owner: it could mint one
    for another project). A token made on the Token page without choosing
    its scopes has all its owner's permissions (``inherit``, with
    ``tokens!user``) and so acts for no project. A browser session (the
    service's OAuth cookie, which a workspace never holds) acts for the
    projects its scopes name.
    """
    named = scope_projects(scopes)
    if token and (len(named) != 1 or any(
            isinstance(s, str) and s.split("!", 1)[0] == "tokens" for s in scopes or ())):
        return frozenset()
    return named


def custom_scopes(settings: Any) -> dict[str, dict[str, str]]:
    """``c.JupyterHub.custom_scopes``: one scope per project."""
    return {
        project_scope(slug): {"description": f"Act for project {slug} ({p.title})"}
        for slug, p in sorted(settings.projects.items())
    }


def project_roles(settings: Any) -> list[dict]:
    """One role per project: its scope, held by the project's hub group."""
    return [
        {
            "name": f"ecluse-project-{slug}",
            "description": f"Members of project {slug}",
            "scopes": [project_scope(slug)],
            "groups": [slug],
        }
        for slug in sorted(settings.projects)
    ]


def hub_roles(settings: Any, extra_user_scopes: list[str] | None = None) -> list[dict]:
    """Roles for ``c.JupyterHub.load_roles`` (with ``c.JupyterHub.custom_scopes =
    custom_scopes(settings)``)."""
    user_scopes = ["self", *(extra_user_scopes or [])]
    roles: list[dict] = [
        {
            "name": "user",
            "description": "Every signed-in user: their own servers and tokens",
            "scopes": user_scopes,
        },
        {
            "name": "ecluse-staff",
            "description": "Écluse platform staff: operate servers and see users",
            "scopes": STAFF_SCOPES,
            "groups": [STAFF],
        },
        {
            "name": "ecluse-output-checker",
            "description": "Écluse output checkers (permissions live in the airlock)",
            "scopes": OUTPUT_CHECKER_SCOPES,
            "groups": [OUTPUT_CHECKERS],
        },
    ]
    roles.extend(project_roles(settings))
    if settings.hub.staff_are_admins:
        roles.append(
            {"name": "admin", "description": "Full hub admin (staff_are_admins)", "groups": [STAFF]}
        )
    return roles


def workspace_token_scopes(base: list[str]) -> Any:
    """``Spawner.server_token_scopes``: ``base`` plus the scope of the server's project
    (its name), so the workspace's ``JUPYTERHUB_API_TOKEN`` acts for that project only."""
    base = list(base)

    def scopes(spawner: Any) -> list[str]:
        # only a configured project has a scope (the hub refuses undefined ones); any
        # other name is refused by start() with its own message
        projects = getattr(getattr(spawner, "settings", None), "projects", None) or {}
        return [*base, project_scope(spawner.name)] if spawner.name in projects else base

    return scopes
