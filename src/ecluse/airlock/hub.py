"""What the hub needs to run the airlock: the service entry and its roles.

Called from the hub configuration (``ecluse.hub.hubconfig``)::

    c.JupyterHub.services.append(airlock_service_spec(settings))
    c.JupyterHub.load_roles.extend(airlock_roles())

Users reach the service with the ``access:services!service=airlock`` scope
(granted by the hub configuration). The OAuth token the airlock receives for a
browser session carries only that scope and ``read:users:groups!user``, so the
identity model includes the user's own groups and nothing else (checked against
JupyterHub 6 in ``tests/airlock/integration/test_api.py``: the hub adds
``read:users:name!user`` and ``read:users:groups!user`` to every token's
identify scopes, so the groups scope is explicit here for hubs that do not).
The service's own token may read users' groups, used only when an identity
model lacks them.
"""

from __future__ import annotations

from typing import Any

from ..hubservice import service_spec
from .settings import airlock_settings

SERVICE_NAME = "airlock"

#: what the OAuth token handed to the airlock may do on the user's behalf
OAUTH_SCOPES = [f"access:services!service={SERVICE_NAME}", "read:users:groups!user"]

#: scopes a workspace token needs to upload to the airlock (Spawner.server_token_scopes)
WORKSPACE_TOKEN_SCOPES = [f"access:services!service={SERVICE_NAME}", "read:users:groups!user"]

#: the service's own token: look up a user's groups, nothing more
SERVICE_SCOPES = ["read:users:groups"]


def airlock_service_spec(settings: Any) -> dict[str, Any]:
    """The entry for ``c.JupyterHub.services``: a hub-managed airlock on loopback."""
    from ..hub.roles import project_scope  # (ecluse.config imports this package)

    spec = service_spec(SERVICE_NAME, settings, airlock_settings(settings), display=True,
                        description="Export requests and output checking")
    return {
        **spec,
        "oauth_no_confirm": True,
        # a browser session acts for the user's projects (the hub keeps only those
        # its owner holds); tokens act for the one project they name (roles.py)
        "oauth_client_allowed_scopes": list(OAUTH_SCOPES) + [
            project_scope(slug) for slug in sorted(getattr(settings, "projects", None) or {})
        ],
    }


def airlock_roles(settings: Any | None = None) -> list[dict[str, Any]]:
    """Roles for ``c.JupyterHub.load_roles``: the service's own, least privilege."""
    return [
        {
            "name": "ecluse-airlock-service",
            "description": "Airlock service: read users' hub groups (permissions)",
            "scopes": list(SERVICE_SCOPES),
            "services": [SERVICE_NAME],
        }
    ]
