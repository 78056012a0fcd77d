"""Batch settings (the ``batch:`` section of ``ecluse.yaml``).

:func:`batch_settings`: the section of a deployment's settings, defaults when
a caller's settings have none (the airlock's pattern).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import settings_section


class BatchSettings(BaseModel):
    """Where the batch service listens, keeps its queue, and how many runs it runs at once."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ip: str = Field("127.0.0.1", description="Address the batch service binds to.")
    port: int = Field(8091, ge=1, le=65535, description="Port the batch service binds to.")
    database_url: str | None = Field(
        None, description="Batch queue database URL (default: SQLite batch.sqlite in the state dir)."
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

    def resolved_database_url(self, state_dir: Path) -> str:
        return self.database_url or f"sqlite:///{Path(state_dir) / 'batch.sqlite'}"


def batch_settings(settings: Any) -> BatchSettings:
    """The batch section of a deployment's settings (defaults when absent)."""
    return settings_section(settings, "batch", BatchSettings)
