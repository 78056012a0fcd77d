"""E-mail notifications of the airlock over SMTP (``airlock.smtp``).

The output checkers on a submission (or resubmission); the requester on each
decision (an approval, changes requested, a rejection; per file too: one file
approved, changes requested to one file — never which) and on release. A mail
says which request (id and project), what happened and links to the request's
page: never a file name, a file's content, a title or a comment, which can be
disclosive — the page, behind the hub's sign-in, shows them.

Sending never holds up or fails a transition: :meth:`Notifier.notify` queues
the mail and returns; one background thread resolves the recipients' addresses
(the directory) and sends, retrying ``attempts`` times with a doubling wait. A
mail given up is logged and audited (``airlock.mail.failed``); a sent one is
audited too (``airlock.mail.sent``, with the recipients' names).
"""

from __future__ import annotations

import logging
import queue
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from ..auditevents import AuditEvent
from ..directory import Directory
from ..i18n import DEFAULT_LANGUAGE, LANGUAGES, N_, gettext
from ..settings.airlock import AirlockSettings, SmtpSettings

__all__ = ["DirectoryMailbook", "Mail", "Mailbook", "Notifier", "TEMPLATES", "notifier_for"]

log = logging.getLogger("ecluse.airlock.notify")

#: transition audit event -> (who: "checkers" | "requester", subject, what happened), in
#: English; each mail is written in its recipient's language (:meth:`Notifier.render`)
TEMPLATES: dict[str, tuple[str, str, str]] = {
    AuditEvent.AIRLOCK_REQUEST_SUBMITTED.value: (
        "checkers", N_("request {id} awaits review"),
        N_("Request {id} of project {project} was submitted for output checking.")),
    AuditEvent.AIRLOCK_REQUEST_RESUBMITTED.value: (
        "checkers", N_("request {id} awaits review again"),
        N_("Request {id} of project {project} was resubmitted after changes "
           "(version {version}).")),
    AuditEvent.AIRLOCK_REVIEW_APPROVED.value: (
        "requester", N_("request {id}: one approval"),
        N_("An output checker approved your request {id} of project {project}; it needs "
           "more approvals before release.")),
    AuditEvent.AIRLOCK_REQUEST_APPROVED.value: (
        "requester", N_("request {id} approved"),
        N_("Your request {id} of project {project} has all its approvals and can be "
           "released.")),
    AuditEvent.AIRLOCK_REQUEST_CHANGES_REQUESTED.value: (
        "requester", N_("request {id}: changes requested"),
        N_("An output checker asked for changes to your request {id} of project {project}.")),
    AuditEvent.AIRLOCK_REQUEST_REJECTED.value: (
        "requester", N_("request {id} rejected"),
        N_("An output checker rejected your request {id} of project {project}.")),
    AuditEvent.AIRLOCK_FILE_APPROVED.value: (
        "requester", N_("request {id}: a file approved"),
        N_("An output checker approved one file of your request {id} of project {project} "
           "(version {version}).")),
    AuditEvent.AIRLOCK_FILE_CHANGES_REQUESTED.value: (
        "requester", N_("request {id}: changes requested to a file"),
        N_("An output checker asked for changes to one file of your request {id} of project "
           "{project} (version {version}); the page says which and why.")),
    AuditEvent.AIRLOCK_REQUEST_RELEASED.value: (
        "requester", N_("request {id} released"),
        N_("The files of your request {id} of project {project} were released: you may "
           "download them from its page.")),
}
SEE_THE_REQUEST = N_("See the request (sign in through the hub):")
NO_FILE_HERE = N_("This message names no file and holds nothing of the files: the request's "
                  "page shows them.")
AIRLOCK = N_("Écluse airlock")


class Mailbook:
    """Who the checkers are and where people's mail goes (blocking; may raise)."""

    def members(self, group: str) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def address(self, name: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def language(self, name: str) -> str | None:
        """The person's preferred language, as they gave it (``None``: none given)."""
        return None

    def recipient(self, name: str) -> tuple[str | None, str | None]:
        """The person's address and preferred language."""
        return self.address(name), self.language(name)


class DirectoryMailbook(Mailbook):
    """Group members and ``mail`` attributes from the directory (LDAP)."""

    def __init__(self, directory: Any) -> None:
        self.directory = directory

    def members(self, group: str) -> list[str]:
        return list(self.directory.group_members(group))

    def address(self, name: str) -> str | None:
        return self.directory.lookup(name).mail

    def language(self, name: str) -> str | None:
        return self.directory.lookup(name).language

    def recipient(self, name: str) -> tuple[str | None, str | None]:
        user = self.directory.lookup(name)  # one search for both
        return user.mail, user.language


def notifier_for(settings: Any, conf: AirlockSettings, audit: Any) -> Notifier | None:
    """The notifier of a deployment (``None`` while ``airlock.smtp.host`` is unset): the
    checkers are the members of the directory's output-checker group (``ldap.
    output_checker_group``, the hub's ``output-checkers``), addresses their ``mail``."""
    if not conf.smtp.host:
        return None
    return Notifier(conf.smtp, DirectoryMailbook(Directory(settings.ldap)), audit,
                    checker_group=settings.ldap.output_checker_group)


@dataclass
class Mail:
    """A mail to send; ``subject`` and ``body`` in the deployment's default language (each
    recipient gets it in theirs: :meth:`Notifier.render`)."""

    event: str
    request_id: str
    project: str
    to_names: list[str]
    subject: str
    body: str
    version: int | None = None


class Notifier:
    """Queues and sends the airlock's mails from one background thread."""

    def __init__(self, conf: SmtpSettings, mailbook: Mailbook, audit: Any, *,
                 checker_group: str, prefix: str = "/services/airlock/",
                 default_language: str = DEFAULT_LANGUAGE) -> None:
        if default_language not in LANGUAGES:
            raise ValueError(f"no such language: {default_language!r}")
        self.conf = conf
        self.default_language = default_language
        self.mailbook = mailbook
        self.audit = audit
        self.checker_group = checker_group
        self.prefix = "/" + prefix.strip("/") + "/"
        self._password = conf.password()  # fail at start, not at the first mail
        self._queue: queue.Queue[Mail | None] = queue.Queue()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="airlock-mail", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ queueing

    def link(self, request_id: str) -> str:
        return f"{self.conf.base_url.rstrip('/')}{self.prefix}requests/{request_id}"

    def notify(self, event: str, *, request_id: str, project: str, requester: str,
               actor: str, version: int | None = None) -> Mail | None:
        """Queue the mail of a transition (``None``: the event mails no one)."""
        template = TEMPLATES.get(event)
        if template is None:
            return None
        who = template[0]
        # the requester never reviews their own request: not told of it as a checker
        names = ([requester] if who == "requester"
                 else ["@" + self.checker_group, "-" + requester])
        mail = Mail(event, request_id, project, names, "", "", version)
        mail.subject, mail.body = self.render(mail, self.default_language)
        with self._idle:
            self._busy += 1
        self._queue.put(mail)
        return mail

    def render(self, mail: Mail, language: str) -> tuple[str, str]:
        """The subject and body of ``mail`` in ``language``."""
        _, subject, what = TEMPLATES[mail.event]
        fields = {"id": mail.request_id, "project": mail.project, "version": mail.version}

        def t(message: str) -> str:
            return gettext(language, message)

        body = (f"{t(what).format(**fields)}\n\n{t(SEE_THE_REQUEST)}\n"
                f"{self.link(mail.request_id)}\n\n{t(NO_FILE_HERE)}\n-- \n{t(AIRLOCK)}\n")
        return f"[{t(AIRLOCK)}] {t(subject).format(**fields)}", body

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued mail is sent or given up (tests, shutdown)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------ sending

    def _language(self, preference: str | None) -> str:
        """A recipient's language: their preference (``fr``, ``en-GB``…) when Écluse
        speaks it, else the deployment's default."""
        tag = (preference or "").strip().split("-")[0].split("_")[0].lower()
        return tag if tag in LANGUAGES else self.default_language

    def _recipients(self, mail: Mail) -> tuple[list[str], dict[str, list[str]]]:
        """The recipients' names, and their addresses by language."""
        names: list[str] = []
        excluded = {n[1:] for n in mail.to_names if n.startswith("-")}
        for n in mail.to_names:
            if n.startswith("@"):
                names.extend(self.mailbook.members(n[1:]))
            elif not n.startswith("-"):
                names.append(n)
        names = sorted(set(names) - excluded)
        addresses: dict[str, list[str]] = {}
        for n in names:
            address, preference = self.mailbook.recipient(n)
            if address:
                addresses.setdefault(self._language(preference), []).append(address)
        return names, addresses

    def _send(self, mail: Mail, language: str, addresses: list[str]) -> None:
        subject, body = self.render(mail, language)
        msg = EmailMessage()
        msg["From"] = self.conf.from_address
        msg["To"] = self.conf.from_address  # the recipients go in Bcc: they do not see each other
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="ecluse.airlock")
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        msg["Content-Language"] = language  # after set_content, which clears content headers
        assert self.conf.host is not None
        with smtplib.SMTP(self.conf.host, self.conf.port, timeout=self.conf.timeout) as smtp:
            if self.conf.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.conf.user:
                smtp.login(self.conf.user, self._password or "")
            smtp.send_message(msg, to_addrs=addresses)

    def _deliver(self, mail: Mail) -> None:
        delay = self.conf.retry_seconds
        error = ""
        names: list[str] = []
        #: language -> addresses not yet sent to (one mail per language; a retry sends
        #: only what failed)
        pending: dict[str, list[str]] | None = None
        for attempt in range(1, self.conf.attempts + 1):
            try:
                if pending is None:
                    names, addresses = self._recipients(mail)
                    if not addresses:
                        error = "no recipient has an e-mail address"
                        break
                    pending = addresses
                for language in sorted(pending):
                    self._send(mail, language, pending[language])
                    del pending[language]
            except Exception as e:  # the server, the network, the directory
                error = f"{type(e).__name__}: {e}"
                log.warning("mail %s of %s: try %d of %d failed: %s", mail.event,
                            mail.request_id, attempt, self.conf.attempts, error)
                if attempt < self.conf.attempts:
                    time.sleep(delay)
                    delay *= 2
                continue
            self._record(AuditEvent.AIRLOCK_MAIL_SENT, mail, "success", recipients=names,
                         attempts=attempt)
            return
        log.error("mail %s of %s given up: %s", mail.event, mail.request_id, error)
        self._record(AuditEvent.AIRLOCK_MAIL_FAILED, mail, "failure", recipients=names,
                     error=error)

    def _record(self, event: AuditEvent, mail: Mail, outcome: str, **details: Any) -> None:
        try:
            self.audit.record(event.value, actor="airlock", project=mail.project,
                              outcome=outcome, request_id=mail.request_id, notice=mail.event,
                              **details)
        except Exception:
            log.exception("could not audit mail %s of %s", mail.event, mail.request_id)

    def _run(self) -> None:
        while True:
            mail = self._queue.get()
            if mail is None:
                return
            try:
                self._deliver(mail)
            except Exception:  # pragma: no cover - _deliver catches; keep the thread alive
                log.exception("mail %s of %s", mail.event, mail.request_id)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
