"""Who asked the hub to act: the requester of the current API request.

JupyterHub calls ``Spawner.stop()`` without saying who asked for it, so a
staff member (or the idle culler) stopping Alice's workspace used to be
audited with Alice as the actor. The hub's server API handler is replaced by
a subclass (registered through the authenticator's ``get_handlers``, the one
hook JupyterHub routes before its own handlers) that puts the requester into
a context variable for the duration of the request. The hub runs the stop in
a task created by that request, which inherits the variable, so the spawner
reads it with :func:`current_requester`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, NamedTuple


class Requester(NamedTuple):
    kind: str  # "user" or "service"
    name: str


_REQUESTER: ContextVar[Requester | None] = ContextVar("ecluse_requester", default=None)


def current_requester() -> Requester | None:
    """The user or service whose hub request is being served (None: the hub itself,
    e.g. stopping servers at shutdown or after a failed start)."""
    return _REQUESTER.get()


def requester_of(current_user: Any) -> Requester | None:
    if current_user is None:
        return None
    return Requester(str(getattr(current_user, "kind", "user")), str(current_user.name))


def server_api_handlers() -> list[tuple[str, type]]:
    """The hub's routes of ``UserServerAPIHandler``, served by a subclass that
    records the requester of a stop (``DELETE``)."""
    from jupyterhub.apihandlers import users

    class RequesterServerAPIHandler(users.UserServerAPIHandler):
        async def delete(self, *args: Any, **kwargs: Any) -> Any:
            token = _REQUESTER.set(requester_of(self.current_user))
            try:
                return await super().delete(*args, **kwargs)
            finally:
                _REQUESTER.reset(token)

    return [
        (route[0], RequesterServerAPIHandler)
        for route in users.default_handlers
        if route[1] is users.UserServerAPIHandler
    ]
