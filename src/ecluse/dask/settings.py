"""The ``dask:`` section of ``ecluse.yaml`` (light: only pydantic, imported by the config)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DaskSettings(BaseModel):
    """The ``dask:`` section of ``ecluse.yaml`` ."""

    model_config = ConfigDict(extra="forbid")

    gateway: bool = Field(True, description="Run dask-gateway as a hub-managed service.")
    proxy_port: int = Field(
        8786, ge=1, le=65535,
        description="Port of the gateway proxy's scheduler listener (TLS, routed by SNI) on "
        "the sandbox host address; workspaces may reach it (DASK_GATEWAY__PROXY_ADDRESS).")
    api_port: int = Field(
        8788, ge=1, le=65535,
        description="Port of the gateway API listener on the sandbox host address (part of "
        "the front): forwards /services/dask-gateway/api/ only, refuses dashboards (403); "
        "workspaces (DASK_GATEWAY__ADDRESS) and cluster sandboxes (api_url, heartbeats) may "
        "reach it.")
    proxy_http_port: int = Field(
        8784, ge=1, le=65535,
        description="Port of the gateway proxy's HTTP listener (API and dashboards, "
        "unauthenticated) on 127.0.0.1; only the front forwards to it, sandboxes cannot "
        "reach it.")
    front_port: int = Field(
        8785, ge=1, le=65535,
        description="Port of the authenticating front on 127.0.0.1: the hub's public route "
        "/services/dask-gateway/ goes there (dashboards for their cluster's owner only), "
        "never straight to the gateway proxy.")
    control_port: int = Field(
        8789, ge=1, le=65535,
        description="Port of the cluster supervisor inside each cluster sandbox.")
    idle_timeout: float = Field(
        1800, ge=0, description="Seconds without activity before a cluster shuts down (0: never).")
    cluster_start_timeout: float = Field(
        120, gt=0, description="Seconds a cluster sandbox and its scheduler may take to start.")
    worker_start_timeout: float = Field(
        60, gt=0, description="Seconds a worker may take to start.")


#: environment variables that override a port (tests, several stacks on one host)
PORT_ENV = {"proxy_port": "ECLUSE_DASK_PROXY_PORT", "api_port": "ECLUSE_DASK_API_PORT",
            "proxy_http_port": "ECLUSE_DASK_PROXY_HTTP_PORT"}


def dask_settings(settings: Any) -> DaskSettings:
    """``settings.dask`` when the section is wired, else defaults; ``$ECLUSE_DASK_PROXY_PORT``,
    ``$ECLUSE_DASK_API_PORT`` and ``$ECLUSE_DASK_PROXY_HTTP_PORT`` override those ports
    (tests, several stacks on one host)."""
    ds = getattr(settings, "dask", None) or DaskSettings()
    update = {key: int(os.environ[var]) for key, var in PORT_ENV.items() if os.environ.get(var)}
    return ds.model_copy(update=update) if update else ds


