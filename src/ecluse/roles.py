"""Who is who: LDAP groups → hub groups → JupyterHub RBAC roles.

The directory decides everything. A user's hub groups are recomputed from
LDAP at every sign-in and refresh:

* one hub group per project the user is a member of, named by the project's
  slug (``cardio-los``);
* ``output-checkers`` for members of ``ldap.output_checker_group``;
* ``staff`` for members of ``ldap.staff_group``.

Roles are attached to these groups with least privilege (:func:`hub_roles`).
"""

from __future__ import annotations

from typing import Any

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
    """Map LDAP group names to (project slugs, role groups)."""
    projects = sorted(
        slug for slug, p in settings.projects.items() if p.ldap_group in directory_groups
    )
    roles = []
    if settings.ldap.output_checker_group in directory_groups:
        roles.append(OUTPUT_CHECKERS)
    if settings.ldap.staff_group in directory_groups:
        roles.append(STAFF)
    return projects, roles


def hub_roles(settings: Any, extra_user_scopes: list[str] | None = None) -> list[dict]:
    """Roles for ``c.JupyterHub.load_roles``."""
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
    if settings.hub.staff_are_admins:
        roles.append(
            {"name": "admin", "description": "Full hub admin (staff_are_admins)", "groups": [STAFF]}
        )
    return roles
