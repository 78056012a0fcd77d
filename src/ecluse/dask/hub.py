"""What the hub needs to run dask-gateway: the service entry, scopes, workspace ports and
environment (:data:`HUB_SERVICE`; light: dask-gateway-server is not imported here).

The hub starts the gateway with ``python -m ecluse.dask.gateway`` (its proxy, its
API listener on the sandbox host address and its authenticating front); users'
tokens must carry ``access:services!service=dask-gateway`` (:data:`USER_SCOPES`).
"""

from __future__ import annotations

import sys
from typing import Any

from ..hubservice import HubService, service_environment, service_user_entry

SERVICE_NAME = "dask-gateway"

#: extra scopes of the hub's ``user`` role (``hub_roles(settings, extra_user_scopes)``)
USER_SCOPES = [f"access:services!service={SERVICE_NAME}"]

#: scopes the workspace server's token needs to use the gateway (server_token_scopes)
WORKSPACE_TOKEN_SCOPES = [f"access:services!service={SERVICE_NAME}", "read:users:groups!user"]


def gateway_service_spec(settings: Any, host: str | None = None) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry: a hub-managed dask-gateway.

    The hub starts it with ``JUPYTERHUB_API_TOKEN``/``_URL``/``_SERVICE_NAME``
    (the authenticator's ``jupyterhub_service_name``); users' tokens must carry
    ``access:services!service=dask-gateway`` (:data:`USER_SCOPES`) and be able
    to read their own groups (``self`` does). The LDAP service password is
    passed on from the hub's environment (never written to a file).

    The service's ``url`` — where configurable-http-proxy sends the hub's public
    ``/services/dask-gateway/`` — is the authenticating front on loopback
    (:mod:`ecluse.dask.front`), not the gateway proxy: dashboards only for their
    cluster's owner, the API refused. Its OAuth client may only identify users
    (``oauth_client_allowed_scopes`` empty); the hub's own service, so no
    confirmation page.
    """
    ds = settings.dask
    prefix = f"/services/{SERVICE_NAME}"
    command = [sys.executable, "-m", "ecluse.dask.gateway", "--prefix", prefix,
               "--front", f"127.0.0.1:{ds.front_port}"]
    if settings.config_file:
        command += ["--config", str(settings.config_file)]
    user = service_user_entry(ds.service_user, "dask.service_user") if ds.service_user else {}
    return {
        **user,
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{ds.front_port}",
        "command": command,
        "environment": service_environment(settings),
        "display": False,
        "oauth_client_id": f"service-{SERVICE_NAME}",
        "oauth_redirect_uri": f"{prefix}/oauth_callback",
        "oauth_client_allowed_scopes": [],
        "oauth_no_confirm": True,
    }


def gateway_client_env(settings: Any, host: str | None) -> dict[str, str]:
    """Workspace environment so that ``Gateway()`` needs no arguments: the API through
    the front's API listener, the schedulers through the proxy's TLS listener, both on
    the sandbox host address ``host`` (the workspace's allowed ports; None: loopback)."""
    ds = settings.dask
    addr = host or "127.0.0.1"
    return {
        "DASK_GATEWAY__ADDRESS": f"http://{addr}:{ds.api_port}/services/{SERVICE_NAME}",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{addr}:{ds.proxy_port}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": f"/services/{SERVICE_NAME}",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }


HUB_SERVICE = HubService(
    name=SERVICE_NAME,
    enabled=lambda settings: settings.dask.gateway and settings.hub.spawner == "ecluse",
    spec=gateway_service_spec,
    user_scopes=tuple(USER_SCOPES),
    # ... and create Dask clusters of its project through the gateway: its API listener
    # and its scheduler (TLS) proxy, never a dashboard port
    workspace_scopes=tuple(WORKSPACE_TOKEN_SCOPES),
    workspace_ports=lambda settings: (settings.dask.api_port, settings.dask.proxy_port),
    workspace_env=gateway_client_env,
)
