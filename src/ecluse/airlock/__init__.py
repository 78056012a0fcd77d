"""The airlock: export requests, immutable staging, checks, reviews, release.

Layers (each calls only the ones below it):

* :mod:`.rules` — states, actions, who may act, audit events (tables);
* :mod:`.permissions` — who may act on a request, what a state allows (raise);
* :mod:`.service` — :class:`AirlockService`, the business logic every entry
  point calls (REST API, web pages, CLI);
* :mod:`.models`, :mod:`.db`, ``migrations/`` — SQLAlchemy + Alembic storage;
* :mod:`.storage` — the content-addressed staging area (sha256);
* :mod:`.web` — the tornado service (REST API + checker UI) behind hub OAuth;
* :mod:`.hub` — the hub service entry and roles.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public names and the module defining each; imported on first use, so a check
#: sandbox (``python -m ecluse.airlock.checkjob``) does not pay for the hub's imports
_EXPORTS = {
    "AirlockError": ".errors",
    "airlock_roles": ".hub",
    "airlock_service_spec": ".hub",
    "Action": ".rules",
    "Actor": ".rules",
    "State": ".rules",
    "AirlockSettings": "ecluse.settings.airlock",
    "airlock_settings": "ecluse.settings.airlock",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


__all__ = [
    "Action",
    "Actor",
    "AirlockError",
    "AirlockSettings",
    "State",
    "airlock_roles",
    "airlock_service_spec",
    "airlock_settings",
]
