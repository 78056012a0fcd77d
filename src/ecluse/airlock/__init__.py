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

from .errors import AirlockError
from .hub import airlock_roles, airlock_service_spec
from .rules import Action, Actor, State
from .settings import AirlockSettings, airlock_settings

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
