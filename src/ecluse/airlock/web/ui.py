"""Server-rendered pages: the checkers' queue, request pages, review forms.

Pages need the hub OAuth cookie (``@web.authenticated`` redirects to the hub
login); forms carry tornado's ``_xsrf`` field. Every page and form calls the
same service methods as the REST API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from ...hubservice.web import HubAuthFromSettings
from ...i18n import N_, LanguageHandler
from .base import REQ, BaseHandler
from .review import TurnaroundPage, home_queue

#: the words of the flash messages, translated where they are shown
DECISIONS = {"approve": N_("approve"), "request_changes": N_("request changes"),
             "reject": N_("reject")}
ACTIONS = {"submit": N_("submit"), "resubmit": N_("resubmit"), "withdraw": N_("withdraw"),
           "release": N_("release"), "release_partial": N_("release the approved files")}
ACTION_LABELS = {"submit": N_("Submit"), "resubmit": N_("Resubmit"), "withdraw": N_("Withdraw"),
                 "release": N_("Release")}


#: the names of a request's states and of the errors, as the pages show them
STATE_NAMES = {
    "draft": N_("draft"), "submitted": N_("submitted"), "in_review": N_("in review"),
    "changes_requested": N_("changes requested"), "approved": N_("approved"),
    "rejected": N_("rejected"), "released": N_("released"), "withdrawn": N_("withdrawn"),
}
ERROR_TITLES = {
    "invalid_input": N_("invalid input"), "not_authenticated": N_("not authenticated"),
    "permission_denied": N_("permission denied"), "not_found": N_("not found"),
    "invalid_state": N_("invalid state"), "policy_violation": N_("policy violation"),
    "too_large": N_("too large"), "quota_exceeded": N_("quota exceeded"),
    "integrity_failure": N_("integrity failure"),
    "directory_unavailable": N_("directory unavailable"), "http_error": N_("error"),
    "internal_error": N_("internal error"),
}
#: what the templates use besides the request's data (:func:`ecluse.airlock.web.app.make_app`)
TEMPLATE_GLOBALS = {"state_names": STATE_NAMES, "error_titles": ERROR_TITLES,
                    "decision_names": DECISIONS, "action_labels": ACTION_LABELS}


class PageHandler(BaseHandler):
    def url(self, *parts: str) -> str:
        return url_path_join(self.settings["airlock_prefix"], *parts)


class HomeHandler(PageHandler):
    @web.authenticated
    async def get(self) -> None:
        me = self.require_identity()
        queue: dict | None = None
        if me.is_checker:
            queue = await home_queue(self, me, await self.run(
                self.service.list_requests, me, scope="review"))
        mine = await self.run(self.service.list_requests, me, scope="mine")
        project = await self.run(self.service.list_requests, me, scope="project")
        mine_ids = {r["id"] for r in mine}
        project = [r for r in project if r["id"] not in mine_ids]
        recent = []
        if me.is_checker or me.is_staff:
            recent = await self.run(self.service.list_requests, me, scope="all", limit=50)
        self.finish(
            self.render_template(
                "home.html", queue=queue, mine=mine, project=project, recent=recent
            )
        )


class RequestPage(PageHandler):
    """A request: files with their verdicts, findings and stored previews.

    Previews come from the service (rendered when each file was checked, shown
    only to those ``FILE_ACCESS`` allows); this page never reads a staged file.
    """

    @web.authenticated
    async def get(self, request_id: str) -> None:
        me = self.require_identity()
        req = await self.run(self.service.get_request, me, request_id)
        self.finish(
            self.render_template(
                "request.html", req=req, flash=self.get_query_argument("flash", ""),
            )
        )


class ReviewForm(PageHandler):
    @web.authenticated
    async def post(self, request_id: str) -> None:
        me = self.require_identity()
        decision = self.get_body_argument("decision", "")
        comment = self.get_body_argument("comment", "")
        overrides = {}
        for key in self.request.body_arguments:
            if key.startswith("override:"):
                reason = self.get_body_argument(key, "").strip()
                if reason:
                    overrides[key[len("override:"):]] = reason
        await self.run(
            self.service.review, me, request_id, decision=decision, comment=comment,
            overrides=overrides,
        )
        self.redirect(self.url("requests", request_id) + "?flash=" + quote(
            self._("recorded: %(decision)s", decision=self._(DECISIONS.get(decision, decision)))))


class DecisionForm(PageHandler):
    """A checker's decision on one file (approve / request changes, with a comment)."""

    @web.authenticated
    async def post(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        decision = self.get_body_argument("decision", "")
        await self.run(
            self.service.decide_file, me, request_id, int(file_id), decision=decision,
            comment=self.get_body_argument("comment", ""),
        )
        self.redirect(self.url("requests", request_id) + "?flash=" + quote(self._(
            "recorded: %(decision)s (one file)",
            decision=self._(DECISIONS.get(decision, decision)))) + f"#file-{int(file_id)}")


class ComparePage(PageHandler):
    """Two versions side by side, with what changed in their tables (previews only)."""

    @web.authenticated
    async def get(self, request_id: str) -> None:
        me = self.require_identity()
        cmp = await self.run(
            self.service.compare_versions, me, request_id,
            self.get_query_argument("from", None), self.get_query_argument("to", None))
        self.finish(self.render_template("compare.html", cmp=cmp, req=cmp["request"]))


class ActionForm(PageHandler):
    @web.authenticated
    async def post(self, request_id: str, action: str) -> None:
        me = self.require_identity()
        fn = self.action(action)
        await self.run_checking(fn, me, request_id, self.get_body_argument("comment", ""))
        self.redirect(self.url("requests", request_id) + "?flash=" + quote(
            self._("done: %(action)s", action=self._(ACTIONS.get(action, action)))))


class DescribeForm(PageHandler):
    """The requester's context, statistical controls and supporting mark of a file."""

    @web.authenticated
    async def post(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        f = await self.run(
            self.service.describe_file, me, request_id, int(file_id),
            context=self.get_body_argument("context", ""),
            controls=self.get_body_argument("controls", ""),
            supporting=self.get_body_argument("supporting", "") == "true")
        self.redirect(self.url("requests", request_id) + "?flash=" + quote(
            self._("%(name)s described (supporting: never released)", name=f["name"])
            if f["supporting"] else self._("%(name)s described", name=f["name"])))


class ProposalPage(PageHandler):
    """The fixed version the airlock proposes for the requester's failing table."""

    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        proposal = await self.run(self.service.get_proposal, me, request_id, int(file_id))
        req = await self.run(self.service.get_request, me, request_id, record_view=False)
        self.finish(self.render_template("proposal.html", req=req, p=proposal))


class AcceptProposalForm(PageHandler):
    @web.authenticated
    async def post(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        f = await self.run_checking(self.service.accept_proposal, me, request_id, int(file_id))
        self.redirect(self.url("requests", request_id) + "?flash=" + quote(
            self._("fixed version of %(name)s accepted: %(verdict)s", name=f["name"],
                   verdict=f["verdict"])))


class DownloadPage(PageHandler):
    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        content = await self.run(self.service.open_file, me, request_id, int(file_id))
        await self.send_file(content)


class OAuthCallback(HubAuthFromSettings, HubOAuthCallbackHandler):
    """Completes the hub OAuth flow with the service's own HubOAuth instance."""


class NotFoundPage(PageHandler):
    async def get(self, *args: Any) -> None:
        raise web.HTTPError(404, N_("page not found"))


def ui_handlers(prefix: str) -> list[tuple]:
    p = prefix.rstrip("/")
    return [
        (p + r"/?", HomeHandler),
        (p + r"/oauth_callback", OAuthCallback),
        (p + r"/language/(?P<language>fr|en)", LanguageHandler),
        (p + r"/turnaround", TurnaroundPage),
        (p + rf"/requests/{REQ}", RequestPage),
        (p + rf"/requests/{REQ}/review", ReviewForm),
        (p + rf"/requests/{REQ}/(?P<action>submit|resubmit|withdraw|release|release_partial)",
         ActionForm),
        (p + rf"/requests/{REQ}/compare", ComparePage),
        (p + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/decision", DecisionForm),
        (p + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/download", DownloadPage),
        (p + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/describe", DescribeForm),
        (p + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/proposal", ProposalPage),
        (p + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/proposal/accept",
         AcceptProposalForm),
    ]
