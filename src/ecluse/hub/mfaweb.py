"""The hub's pages and API for the second factor (:mod:`ecluse.hub.mfa`).

* ``/hub/mfa/enrol`` — the first sign-in of a user without a second factor:
  the authenticator answers the login form with the enrolment page (QR code,
  the secret in text, ten recovery codes shown once); the user types the
  first code from their app and is signed in.
* ``POST /hub/api/ecluse/mfa/<user>/reset`` — staff forget a user's second
  factor (lost phone); the user enrols again at their next sign-in. Only a
  member of the staff group may, never for themselves; audited (``mfa.reset``).
"""

from __future__ import annotations

from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from ..i18n import N_
from .mfa import provisioning_uri, qr_svg
from .roles import STAFF

TEMPLATE = "ecluse-mfa-enrol.html"


async def render_enrolment(handler: Any, ticket: str, pending: Any, issuer: str,
                           error: str | None = None) -> None:
    uri = provisioning_uri(pending.secret, pending.username, issuer)
    html = await handler.render_template(
        TEMPLATE, ticket=ticket, username=pending.username, qr=qr_svg(uri),
        secret=pending.secret, recovery_codes=pending.recovery_codes, error=error,
        next=handler.get_argument("next", ""), enrol_url=handler.hub.base_url + "mfa/enrol",
    )
    handler.set_header("Cache-Control", "no-store")
    handler.finish(html)


class EnrolHandler(BaseHandler):
    """Confirms an enrolment with its first code, then signs the user in."""

    async def get(self) -> None:
        self.redirect(self.settings["login_url"])

    async def post(self) -> None:
        auth = self.authenticator
        ticket = self.get_body_argument("ticket", "")
        otp = self.get_body_argument("otp", "")
        model = await auth.finish_enrolment(self, ticket, otp)
        if model is None:
            pending = auth.pending_enrolment(ticket)
            self.set_status(403)
            await render_enrolment(
                self, ticket, pending, auth.settings.mfa.issuer,
                error=N_("That code is not right: check your phone's clock and type the "
                         "code your app shows now."))
            return
        user = await self.auth_to_user(model)
        self.set_login_cookie(user)
        self.redirect(self.get_next_url(user))


class ResetHandler(APIHandler):
    """Staff forget a user's second factor."""

    async def post(self, name: str) -> None:
        current = self.current_user
        groups = [g.name for g in getattr(current, "groups", [])]
        if current is None or getattr(current, "kind", "user") != "user" or STAFF not in groups:
            raise web.HTTPError(403, "Only platform staff may reset a second factor.")
        if current.name == name:
            raise web.HTTPError(403, "Ask another member of staff to reset your own second "
                                     "factor.")
        removed = self.authenticator.reset_mfa(name, by=current.name)
        if not removed:
            raise web.HTTPError(404, f"{name} has no second factor enrolled.")
        self.set_status(200)
        self.write({"user": name, "reset": True})


def mfa_handlers() -> list[tuple[str, type]]:
    return [(r"/mfa/enrol", EnrolHandler), (r"/api/ecluse/mfa/([^/]+)/reset", ResetHandler)]
