"""Dask over project data: quota sizing, dask-gateway on sandboxes, demo warehouse.

* :mod:`ecluse.dask.sizing` — ``dask_env(project, user)``, ``sizing(project)``;
* :mod:`ecluse.dask.gateway` — ``SandboxBackend``, ``gateway_config``
  (imports dask-gateway-server: import it explicitly);
* :mod:`ecluse.dask.hub` — the hub service entry, scopes, workspace ports and
  environment (``HUB_SERVICE``, ``gateway_service_spec``, ``gateway_client_env``);
* :mod:`ecluse.dask.front` — the authenticating front of the service's public
  route (dashboards for their cluster's owner only) and the API listener on the
  sandbox host address (the gateway API only, dashboards refused);
* :mod:`ecluse.dev.warehouse` — the deterministic demo warehouse;
* :mod:`ecluse.dask.supervisor` — runs inside cluster sandboxes.

See docs/dask.md.
"""

from .sizing import DaskSizing, dask_command_prefix, dask_env, sizing

__all__ = ["DaskSizing", "dask_command_prefix", "dask_env", "sizing"]
