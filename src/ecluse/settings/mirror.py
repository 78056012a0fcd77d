"""The ``mirror:`` section of ``ecluse.yaml`` (light: only pydantic, imported by the config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class MirrorSettings(BaseModel):
    """The ``mirror:`` section of ``ecluse.yaml``: the package mirror of workspaces."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Run the package mirror (a hub-managed service): workspaces get "
        "pip pointed at it (PIP_INDEX_URL) and may reach its port on the sandbox host "
        "address; it serves only the packages on each project's allow-list "
        "(ecluse packages allow).")
    port: int = Field(
        3141, ge=1, le=65535,
        description="Port of the mirror's filtering front on the sandbox host address "
        "(the one port workspaces reach for packages).")
    backend_port: int = Field(
        3142, ge=1, le=65535,
        description="Port of the caching server behind the front (proxpi) on 127.0.0.1; "
        "only the front talks to it, sandboxes cannot reach it.")
    upstream: str = Field(
        "https://pypi.org/simple/", pattern=r"^(https?|file)://",
        description="The upstream simple index (PEP 503/691) the mirror fetches allowed "
        "packages from and `ecluse packages allow` resolves closures against.")
    data_dir: Path | None = Field(
        None, description="The mirror's folder: the projects' allow-lists, the token key "
        "and the backend's cache (default: mirror/ in the state directory).")
    service_user: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
        description="System user the hub runs the mirror as (e.g. ecluse-mirror; unset: "
        "the hub's own user). The hub must run as root; the user owns data_dir.")
    binary_only: bool = Field(
        True, description="Resolve and serve wheels only: an sdist runs code when it is "
        "built, and needs its build backend from the index too.")

    def resolved_data_dir(self, state_dir: Path) -> Path:
        return Path(self.data_dir) if self.data_dir else Path(state_dir) / "mirror"
