"""The hub-managed services of Écluse, each described by its own ``hub.py``
(:class:`ecluse.hubservice.HubService`): the hub configuration and the workspace
environment loop over them."""

from __future__ import annotations

from typing import Any

from ..airlock.hub import HUB_SERVICE as AIRLOCK
from ..batch.hub import HUB_SERVICE as BATCH
from ..dask.hub import HUB_SERVICE as DASK_GATEWAY
from ..hubservice import HubService
from ..mirror.hub import HUB_SERVICE as PACKAGE_MIRROR

SERVICES: tuple[HubService, ...] = (AIRLOCK, BATCH, DASK_GATEWAY, PACKAGE_MIRROR)


def enabled_services(settings: Any) -> list[HubService]:
    """The services this deployment runs, in :data:`SERVICES` order."""
    return [s for s in SERVICES if s.enabled(settings)]
