"""The ``dask:`` section of ``ecluse.yaml`` (light: only pydantic, imported by the config)."""

from __future__ import annotations

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
    service_user: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
        description="System user the hub runs the gateway as (e.g. ecluse-dask; unset: the "
        "hub's own user). The hub must run as root; the user must exist, be in the "
        "launcher's group (sandbox.launcher_socket: the gateway starts its clusters and "
        "writes its audit records through the launcher) and reach the service's Python and "
        "the settings. The service starts in /.")

