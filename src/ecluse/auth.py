"""Deprecated: :mod:`ecluse.hub.auth` (moved in 0.x; this alias goes in the next release)."""

import warnings

from .hub.auth import EcluseAuthenticator

warnings.warn("ecluse.auth is deprecated: use ecluse.hub.auth.EcluseAuthenticator", DeprecationWarning,
              stacklevel=2)

__all__ = ["EcluseAuthenticator"]
