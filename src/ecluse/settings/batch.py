"""Batch settings (the ``batch:`` section of ``ecluse.yaml``).

:func:`batch_settings`: the section of a deployment's settings, defaults when
a caller's settings have none (the airlock's pattern).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import settings_section
from .airlock import move_legacy_database


class BatchSettings(BaseModel):
    """Where the batch service listens, keeps its queue, and how many runs it runs at once."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ip: str = Field("127.0.0.1", description="Address the batch service binds to.")
    port: int = Field(8091, ge=1, le=65535, description="Port the batch service binds to.")
    database_url: str | None = Field(
        None, description="Batch queue database URL (default: SQLite batch/batch.sqlite in the "
        "state dir's database folder)."
    )
    concurrency: int = Field(
        2, ge=1, le=256, description="Most runs executing at the same time (the rest wait queued)."
    )
    default_timeout: float = Field(
        3600.0, gt=0, description="Seconds a run may take when the request names no timeout."
    )
    max_timeout: float = Field(
        24 * 3600.0, gt=0, description="Longest timeout a request may ask for (seconds)."
    )
    max_notebook_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest notebook a request may carry (bytes)."
    )
    max_parameters: int = Field(100, ge=0, description="Most parameters of one run.")
    kernel_name: str = Field(
        "python3", description="Kernel papermill starts inside the sandbox (whatever the "
        "notebook's metadata says)."
    )
    poll_interval: float = Field(
        0.25, gt=0, le=10, description="Seconds between checks of a running run (progress, "
        "cancel, timeout)."
    )
    group_cache_seconds: float = Field(
        30.0, ge=0, description="Seconds a user's hub groups are cached by the service."
    )
    staff_group: str = Field("staff", description="Hub group whose members may use the service.")
    service_user: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
        description="System user the hub runs the batch service as (e.g. ecluse-batch; unset: "
        "the hub's own user). The hub must run as root; the user must exist, be in the "
        "launcher's group (sandbox.launcher_socket: the service starts its runs, makes and "
        "reads their folders and writes its audit records through the launcher), own "
        "<state>/batch-records and the queue database's folder and reach the service's "
        "Python and the settings. The service starts in /.")

    def resolved_storage_dir(self, state_dir: Path) -> Path:
        """The batch service's own folder of the state's database folder (its queue)."""
        return Path(state_dir) / "batch"

    def resolved_database_url(self, state_dir: Path) -> str:
        """The queue's URL; the default is ``<state_dir>/batch/batch.sqlite`` (a folder the
        service's user may own: SQLite writes its journal next to the database), where a
        database of the earlier layout (``<state_dir>/batch.sqlite``) is moved first."""
        if self.database_url:
            return self.database_url
        folder = self.resolved_storage_dir(state_dir)
        move_legacy_database(Path(state_dir) / DB_NAME, folder / DB_NAME)
        return f"sqlite:///{folder / DB_NAME}"


DB_NAME = "batch.sqlite"


def batch_settings(settings: Any) -> BatchSettings:
    """The batch section of a deployment's settings (defaults when absent)."""
    return settings_section(settings, "batch", BatchSettings)
