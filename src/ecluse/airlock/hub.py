"""What the hub needs to run the airlock: the service entry and its roles.

The hub configuration (``ecluse.hub.hubconfig``) reads :data:`HUB_SERVICE`,
as it reads every service's.

Users reach the service with the ``access:services!service=airlock`` scope
(granted by the hub configuration). The OAuth token the airlock receives for a
browser session carries only that scope and ``read:users:groups!user``, so the
identity model includes the user's own groups and nothing else (checked against
JupyterHub 6 in ``tests/airlock/test_web.py``: the hub adds
``read:users:name!user`` and ``read:users:groups!user`` to every token's
identify scopes, so the groups scope is explicit here for hubs that do not).
The service's own token may read users' groups, used only when an identity
model lacks them.
"""

from __future__ import annotations

import os
from typing import Any

from ..hub.roles import project_scope
from ..hubservice import HubService, service_spec, service_user_entry
from ..settings.airlock import airlock_settings

SERVICE_NAME = "airlock"

#: what the OAuth token handed to the airlock may do on the user's behalf
OAUTH_SCOPES = [f"access:services!service={SERVICE_NAME}", "read:users:groups!user"]

#: scopes a workspace token needs to upload to the airlock (Spawner.server_token_scopes)
WORKSPACE_TOKEN_SCOPES = [f"access:services!service={SERVICE_NAME}", "read:users:groups!user"]

#: the service's own token: look up a user's groups, nothing more
SERVICE_SCOPES = ["read:users:groups"]


#: addresses that mean "this host only": an airlock there listens on the sandbox host
#: address instead, where workspaces upload to it
LOOPBACK = ("127.0.0.1", "localhost")


def airlock_ip(settings: Any, host: str | None) -> str:
    """Where the airlock listens and workspaces reach it (the one rule): ``airlock.ip``,
    or the sandbox host address ``host`` when that is loopback."""
    ip = airlock_settings(settings).ip
    return host if host and ip in LOOPBACK else ip


#: the airlock's hub API token when it runs as a Deployment of its own on Kubernetes (the
#: hub pod and the Deployment read it from the ecluse-airlock-token Secret)
KUBE_TOKEN_ENV = "ECLUSE_AIRLOCK_API_TOKEN"


def airlock_deployment_host(settings: Any) -> str | None:
    """The airlock Service's address when it runs as its own Deployment (``backend:
    kubernetes`` with ``$ECLUSE_AIRLOCK_API_TOKEN``: config/kubernetes/ecluse-airlock.yaml),
    else None (a process of the hub). ``sandbox.kubernetes.airlock_address`` overrides the
    Service's name (its cluster IP, for sandboxes without DNS)."""
    sandbox = getattr(settings, "sandbox", None)
    if getattr(sandbox, "backend", None) != "kubernetes" or not os.environ.get(KUBE_TOKEN_ENV):
        return None
    kube = dict(getattr(sandbox, "kubernetes", None) or {})
    return kube.get("airlock_address") or (
        f"ecluse-airlock.{kube.get('hub_namespace', 'ecluse')}.svc.cluster.local")


def airlock_url(settings: Any, host: str | None) -> str:
    """The airlock's URL as workspaces reach it (``ECLUSE_AIRLOCK_URL``)."""
    ip = airlock_deployment_host(settings) or airlock_ip(settings, host)
    return f"http://{ip}:{airlock_settings(settings).port}/services/{SERVICE_NAME}/"


def airlock_service_spec(settings: Any, host: str | None = None) -> dict[str, Any]:
    """The entry for ``c.JupyterHub.services``: a hub-managed airlock on loopback, or on
    the sandbox host address ``host`` (:func:`airlock_ip`)."""
    conf = airlock_settings(settings)
    spec = service_spec(SERVICE_NAME, settings, conf, display=True,
                        description="Export requests and output checking")
    spec["url"] = f"http://{airlock_ip(settings, host)}:{conf.port}"
    external = airlock_deployment_host(settings)
    if external:  # its own Deployment: the hub starts nothing, knows its Service
        spec = {k: v for k, v in spec.items() if k not in ("command", "environment")}
        spec["url"] = f"http://{external}:{conf.port}"
        spec["api_token"] = os.environ[KUBE_TOKEN_ENV]
    elif conf.service_user:
        spec.update(service_user_entry(conf.service_user, "airlock.service_user"))
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


HUB_SERVICE = HubService(
    name=SERVICE_NAME,
    enabled=lambda settings: True,
    spec=airlock_service_spec,
    roles=airlock_roles,
    user_scopes=(f"access:services!service={SERVICE_NAME}",),
    # the workspace's own token (the user's) may upload to the airlock
    workspace_scopes=tuple(WORKSPACE_TOKEN_SCOPES),
    workspace_ports=lambda settings: (airlock_settings(settings).port,),
    workspace_env=lambda settings, host: {"ECLUSE_AIRLOCK_URL": airlock_url(settings, host)},
)
