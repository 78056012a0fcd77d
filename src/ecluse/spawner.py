"""Deprecated: :mod:`ecluse.hub.spawner` (moved in 0.x; this alias goes in the next release)."""

import warnings

from .hub.spawner import EcluseSpawner

warnings.warn("ecluse.spawner is deprecated: use ecluse.hub.spawner.EcluseSpawner", DeprecationWarning,
              stacklevel=2)

__all__ = ["EcluseSpawner"]
