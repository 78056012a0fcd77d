"""Every audit event name, in one table (like the airlock's transition table).

The hub side, the services, the launcher and the CLI record members of
:class:`AuditEvent`; :meth:`ecluse.audit.AuditLog.record` refuses any other
name. A ``StrEnum``, so the stored values are the plain strings of before.
The event list in ``docs/reference/audit-events.md`` is generated from this
table: ``python -m ecluse.auditevents > docs/reference/audit-events.md``
(a test checks that it is current, that every member is recorded somewhere
in ``src/`` and that nothing records a name that is not a member).

A member's name is its value in upper case with dots as underscores
(``login.failure`` -> ``LOGIN_FAILURE``); ``tools/audit_events.py`` relies
on it to turn string literals at call sites into members.
"""

from __future__ import annotations

from enum import StrEnum


class AuditEvent(StrEnum):
    """An audit event name, with a one-line description (``doc``)."""

    doc: str

    def __new__(cls, value: str, doc: str = "") -> AuditEvent:
        member = str.__new__(cls, value)
        member._value_ = value
        member.doc = doc
        return member

    # the audit log itself and identities
    AUDIT_KEYED = ("audit.keyed", "the start of the keyed (HMAC) chain, written at the first "
                   "start with an audit key; carries the head of the legacy chain")
    IDENTITY_ALIAS_MIGRATED = ("identity.alias_migrated", "`ecluse migrate identities`: this "
                               "name (`alias`) is that person (`canonical`); records are never "
                               "rewritten, queries by actor follow these")
    IDENTITY_MIGRATION = ("identity.migration", "a run of `ecluse migrate identities` "
                          "(outcome `success` or `failure`)")

    # sign-in and second factor (hub authenticator, OIDC)
    LOGIN_SUCCESS = ("login.success", "a sign-in (groups, uid number, second factor used)")
    LOGIN_FAILURE = ("login.failure", "a refused sign-in, with a `reason` (`wrong-password`, "
                     "`unknown-user`, `invalid-username`, `ldap-unavailable`, `no-project`, "
                     "the second factor's)")
    LOGIN_THROTTLED = ("login.throttled", "a sign-in refused by the throttle (outcome `denied`)")
    MFA_ENROL = ("mfa.enrol", "second factor enrolment (`started`, `success`, `failure`)")
    MFA_RESET = ("mfa.reset", "staff removed a user's second factor")
    GROUPS_CHANGE = ("groups.change", "a user's project groups changed at sign-in "
                     "(`added`, `removed`)")
    AUTH_REFRESH = ("auth.refresh", "the directory refused a signed-in user on refresh")
    MEMBERSHIP_REVOKED = ("membership.revoked", "a user left a project: workspace stopped "
                          "and/or hub group left (`actions`)")

    # workspaces (spawner, route filter)
    WORKSPACE_START = ("workspace.start", "a workspace started (datasets mounted, sandbox, uid)")
    WORKSPACE_STOP = ("workspace.stop", "a workspace stopped; `actor` is who stopped it (staff, "
                      "the idle culler), `owner` the workspace's owner, `requested_by` "
                      "`user`, `service` or `hub`")
    WORKSPACE_EXIT = ("workspace.exit", "a workspace's process ended on its own "
                      "(`status`, `oom_killed`)")
    WORKSPACE_DENIED = ("workspace.denied", "a workspace start refused (`reason`)")
    WORKSPACE_ORPHAN_REMOVED = ("workspace.orphan_removed", "a workspace sandbox that no hub "
                                "record owned (its hub was killed while it started) was "
                                "stopped and removed (`sandbox`, `found`: at `start` or `poll`)")
    WORKSPACE_ROUTE_DENIED = ("workspace.route_denied", "the route filter refused a request to "
                              "a workspace")

    # the sandbox launcher and the platform
    SANDBOX_LAUNCH = ("sandbox.launch", "the launcher started a sandbox for a caller")
    SANDBOX_LAUNCH_REFUSED = ("sandbox.launch.refused", "the launcher refused a request "
                              "(actor `uid:<n>`)")
    PLATFORM_COMPONENT_RESTARTED = ("platform.component_restarted", "the supervisor restarted "
                                    "a component (`seconds_down`, `attempts`)")
    PLATFORM_LEFTOVERS_REMOVED = ("platform.leftovers_removed", "what a component's start "
                                  "removed of a crashed run")

    # Dask
    DASK_DENIED = ("dask.denied", "a cluster request refused (not a member of the project)")
    DASK_REVOKED = ("dask.revoked", "a cluster stopped: its owner left the project")
    DASK_DASHBOARD = ("dask.dashboard", "a dashboard request refused by the front")

    # batch runs
    MIRROR_PACKAGE_ALLOWED = ("mirror.package_allowed", "`ecluse packages allow`: a package "
                              "and its dependency closure, pinned, put on a project's "
                              "allow-list of the package mirror (outcome `failure`: not "
                              "resolved, nothing allowed)")
    MIRROR_PACKAGE_REVOKED = ("mirror.package_revoked", "`ecluse packages revoke`: a package "
                              "and its closure taken off a project's allow-list")
    BATCH_SUBMIT = ("batch.submit", "a batch run submitted")
    BATCH_START = ("batch.start", "a batch run started in its sandbox")
    BATCH_FINISH = ("batch.finish", "a batch run ended (outcome `success`, `failure`, "
                    "`cancelled`, `timeout`)")
    BATCH_CANCEL = ("batch.cancel", "a batch run cancelled")
    BATCH_EXPORT = ("batch.export", "a batch run's files sent to the airlock")
    BATCH_SHARE = ("batch.share", "a batch run shared with its project")
    BATCH_READ = ("batch.read", "a batch run's log or files read")
    BATCH_DENIED = ("batch.denied", "a batch action refused (outcome `denied`)")

    # the airlock: transitions (see the table in airlock.md)
    AIRLOCK_REQUEST_SUBMITTED = ("airlock.request.submitted", "a request submitted for review")
    AIRLOCK_REVIEW_APPROVED = ("airlock.review.approved", "one checker approved (more "
                               "approvals needed)")
    AIRLOCK_REQUEST_APPROVED = ("airlock.request.approved", "a request has all its approvals")
    AIRLOCK_REQUEST_CHANGES_REQUESTED = ("airlock.request.changes_requested", "a checker "
                                         "asked for changes")
    AIRLOCK_REQUEST_REJECTED = ("airlock.request.rejected", "a checker rejected a request")
    AIRLOCK_REQUEST_RESUBMITTED = ("airlock.request.resubmitted", "a request resubmitted "
                                   "after changes")
    AIRLOCK_REQUEST_RELEASED = ("airlock.request.released", "a request's files released "
                                "(`partial`: only its approved files, the others held)")
    AIRLOCK_REQUEST_WITHDRAWN = ("airlock.request.withdrawn", "a request withdrawn")
    # the airlock: outside state changes
    # the airlock: import requests (controlled ingress, docs/airlock.md "Imports")
    AIRLOCK_IMPORT_CREATED = ("airlock.import.created", "an import request opened (an "
                              "upload, or a staff-side load)")
    AIRLOCK_IMPORT_FILE_ACCEPTED = ("airlock.import.file_accepted", "a file quarantined and "
                                    "passed the ingress checks (sha256, kind)")
    AIRLOCK_IMPORT_FILE_REFUSED = ("airlock.import.file_refused", "a file quarantined and "
                                   "refused by the ingress checks (the reasons)")
    AIRLOCK_IMPORT_FILE_REMOVED = ("airlock.import.file_removed", "a file removed from an "
                                   "open import request")
    AIRLOCK_IMPORT_SUBMITTED = ("airlock.import.submitted", "an import request submitted "
                                "for approval")
    AIRLOCK_IMPORT_APPROVED = ("airlock.import.approved", "an import approved by staff or a "
                               "data owner of the project")
    AIRLOCK_IMPORT_REJECTED = ("airlock.import.rejected", "an import rejected")
    AIRLOCK_IMPORT_WITHDRAWN = ("airlock.import.withdrawn", "an import request withdrawn")
    AIRLOCK_IMPORT_DELIVERED = ("airlock.import.delivered", "an import's files copied to "
                                "/project/inbox/<request> with their manifest")
    AIRLOCK_IMPORT_DELIVERY_FAILED = ("airlock.import.delivery_failed", "an approved import "
                                      "could not be copied to the inbox (retried by "
                                      "ecluse airlock import deliver)")
    AIRLOCK_IMPORT_DENIED = ("airlock.import.denied", "an import action refused (who, what, "
                             "why)")
    AIRLOCK_REQUEST_CREATED = ("airlock.request.created", "a request opened")
    AIRLOCK_FILE_UPLOADED = ("airlock.file.uploaded", "a file added to a request")
    AIRLOCK_FILE_CHECKED = ("airlock.file.checked", "the background check of an uploaded "
                            "file ended: its verdict (`review` when the check failed)")
    AIRLOCK_FILE_REMOVED = ("airlock.file.removed", "a file removed from a request")
    AIRLOCK_FILE_DESCRIBED = ("airlock.file.described",
                              "the requester set a file's context, statistical controls or "
                              "supporting mark")
    AIRLOCK_FILE_APPROVED = ("airlock.file.approved", "a checker approved one file of a "
                             "request (per-file decision)")
    AIRLOCK_FILE_CHANGES_REQUESTED = ("airlock.file.changes_requested", "a checker asked "
                                      "for changes to one file of a request (per-file decision)")
    AIRLOCK_VERSIONS_COMPARED = ("airlock.versions.compared", "a checker or the requester "
                                 "compared two versions of a request (the previews' diff)")
    AIRLOCK_PROPOSAL_VIEWED = ("airlock.proposal.viewed",
                               "the requester read the fixed version the airlock proposed "
                               "for a failing table")
    AIRLOCK_PROPOSAL_ACCEPTED = ("airlock.proposal.accepted",
                                 "the requester accepted the airlock's fixed version of a "
                                 "failing table in place of the file (re-checked as an upload)")
    AIRLOCK_FILE_QUOTA_EXCEEDED = ("airlock.file.quota_exceeded", "an upload refused by the "
                                   "uploader's staging quota")
    AIRLOCK_CHECK_DRY_RUN = ("airlock.check.dry_run", "files checked before export "
                             "(a dry run: nothing kept)")
    AIRLOCK_REQUEST_VIEWED = ("airlock.request.viewed", "a checker opened a request")
    AIRLOCK_FILE_DOWNLOADED = ("airlock.file.downloaded", "a released file downloaded")
    AIRLOCK_FILE_INTEGRITY_FAILURE = ("airlock.file.integrity_failure", "a staged file no "
                                      "longer matches its sha256")
    AIRLOCK_REQUEST_PURGED = ("airlock.request.purged", "the staged files of a closed request "
                              "deleted")
    AIRLOCK_PERMISSION_DENIED = ("airlock.permission_denied", "an airlock action refused")
    AIRLOCK_MAIL_SENT = ("airlock.mail.sent", "an airlock e-mail notification sent "
                         "(the recipients' names)")
    AIRLOCK_MAIL_FAILED = ("airlock.mail.failed", "an airlock e-mail notification given up "
                           "after its tries (the transition stands)")


def is_event(name: object) -> bool:
    """Whether ``name`` is the value of an :class:`AuditEvent` member."""
    return isinstance(name, str) and name in AuditEvent._value2member_map_


def reference() -> str:
    """The Markdown event list of ``docs/reference/audit-events.md``."""
    lines = [
        "# Audit events",
        "",
        "Generated from `ecluse.auditevents.AuditEvent`: "
        "`python -m ecluse.auditevents > docs/reference/audit-events.md`. "
        "`ecluse audit show --event E` lists the records of one event; "
        "[operations.md](../operations.md#audit-log) says how the log is kept.",
        "",
        "| event | what |",
        "|---|---|",
    ]
    lines += [f"| `{e.value}` | {e.doc} |" for e in AuditEvent]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
