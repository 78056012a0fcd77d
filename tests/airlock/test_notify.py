"""The airlock's e-mails, sent to a real SMTP server (aiosmtpd) the test starts on loopback."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from email import policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from ecluse.airlock.notify import Mailbook, Notifier, notifier_for
from ecluse.airlock.rules import State
from ecluse.airlock.service import AirlockService
from ecluse.settings.airlock import AirlockSettings, SmtpSettings
from tests.airlock.conftest import GROUPS, Files, describe_all

pytestmark = pytest.mark.timeout(120)

BASE_URL = "https://tre.hospital.example"


class GroupsMailbook(Mailbook):
    """The test users' groups (conftest.GROUPS); everyone at hospital.example."""

    def members(self, group: str) -> list[str]:
        return sorted(n for n, groups in GROUPS.items() if group in groups)

    def address(self, name: str) -> str | None:
        return f"{name}@hospital.example"


class Sink:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.mails: list[dict[str, Any]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        self.mails.append({
            "to": sorted(envelope.rcpt_tos), "subject": str(msg["Subject"]),
            "body": msg.get_content(), "raw": envelope.content.decode("utf-8", "replace"),
            "message": msg,
        })
        return "250 OK"

    def to(self, address: str) -> list[str]:
        return [m["subject"] for m in self.mails if address in m["to"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _notifier(service: AirlockService, port: int, mailbook: Mailbook | None = None,
              **kw: Any) -> Notifier:
    """The tests' notifier; the mails in English (``default_language``) unless a test asks
    for the deployments' default (French: test_mails_in_each_recipients_language)."""
    conf = SmtpSettings(host="127.0.0.1", port=port, starttls=False, base_url=BASE_URL,
                        from_address="airlock@hospital.example", attempts=2,
                        retry_seconds=0.05, timeout=5)
    kw.setdefault("default_language", "en")
    return Notifier(conf, mailbook or GroupsMailbook(), service.audit,
                    checker_group=service.settings.checker_group, **kw)


@pytest.fixture
def mailing(service: AirlockService, sink: tuple[Sink, int]) -> Iterator[Sink]:
    handler, port = sink
    service.notifier = _notifier(service, port)
    try:
        yield handler
    finally:
        service.notifier.close()
        service.notifier = None


CHECKERS = ["carol@hospital.example", "dan@hospital.example", "erin@hospital.example",
            "fay@hospital.example"]


def test_checkers_on_submission_the_requester_on_each_decision_and_release(
        service, mailing, create_request_at_status, users):
    rid = create_request_at_status(State.RELEASED)["id"]
    assert service.notifier.flush(30)
    link = f"{BASE_URL}/services/airlock/requests/{rid}"
    # the checkers (never the requester) when it is submitted
    assert [m["to"] for m in mailing.mails if "awaits review" in m["subject"]] == [CHECKERS]
    # the requester: carol's approval, dan's (all approvals), the release
    assert mailing.to("alice@hospital.example") == [
        f"[Écluse airlock] request {rid}: one approval",
        f"[Écluse airlock] request {rid} approved",
        f"[Écluse airlock] request {rid} released",
    ]
    assert len(mailing.mails) == 4
    for m in mailing.mails:
        assert link in m["body"]
        assert m["message"]["From"] == "airlock@hospital.example"
    # no one else was written to: the approvers are not told of their own approvals
    assert {a for m in mailing.mails for a in m["to"]} == {*CHECKERS, "alice@hospital.example"}

    # changes requested, then resubmitted (checkers again), then rejected
    mailing.mails.clear()
    rid2 = create_request_at_status(State.CHANGES_REQUESTED)["id"]
    service.resubmit(users.alice, rid2, "rounded")
    service.review(users.dan, rid2, decision="reject", comment="Row-level data")
    assert service.notifier.flush(30)
    assert [(m["to"], m["subject"]) for m in mailing.mails] == [
        (CHECKERS, f"[Écluse airlock] request {rid2} awaits review"),
        (["alice@hospital.example"], f"[Écluse airlock] request {rid2}: changes requested"),
        (CHECKERS, f"[Écluse airlock] request {rid2} awaits review again"),
        (["alice@hospital.example"], f"[Écluse airlock] request {rid2} rejected"),
    ]
    sent = service.audit.records(event="airlock.mail.sent")
    assert len(sent) == 8
    assert sent[0].details["recipients"] == ["carol", "dan", "erin", "fay"]
    assert sent[0].outcome == "success" and sent[0].details["request_id"] == rid


def test_no_file_name_content_title_or_comment_reaches_any_mail(
        service, mailing, users):
    """A disclosive file name (a patient's name and birth date), its content, the title and
    the comments stay behind the sign-in: the mails carry the request id and a link only."""
    secret_name = "DUPONT_Jean_1961-04-02_VIH.csv"
    secret_cell = "DUPONTJEAN19610402"
    alice = users.alice
    req = service.create_request(alice, project="cardio-los",
                                 title="Suivi de M. Dupont Jean", justification="Paper")
    rid = req["id"]
    service.add_file(alice, rid, secret_name, [b"name,n\n" + secret_cell.encode() + b",25\n"])
    service.add_file(alice, rid, *_pair(Files.ok))
    service.submit(alice, rid, "includes Dupont")
    service.review(users.carol, rid, decision="request_changes", comment="Dupont is named")
    assert service.notifier.flush(30)
    assert len(mailing.mails) == 2
    for m in mailing.mails:
        for text in (m["raw"], m["body"], m["subject"]):
            lowered = text.lower()
            # the birth date as written (not "1961" alone: a Message-ID's random digits
            # may hold it)
            for secret in ("dupont", "1961-04-02", "19610402", "vih", Files.ok[0],
                           "counts_safe", "suivi"):
                assert secret not in lowered, (secret, text)
        assert rid in m["body"]


def _pair(f: tuple[str, bytes]) -> tuple[str, list[bytes]]:
    return f[0], [f[1]]


def test_smtp_down_the_transition_stands_and_the_failure_is_audited(
        service, users, create_request_at_status):
    service.notifier = _notifier(service, _free_port())  # nothing listens there
    try:
        req = create_request_at_status(State.SUBMITTED)
        assert req["state"] == "submitted"
        released = create_request_at_status(State.RELEASED)
        assert released["state"] == "released"
        assert service.notifier.flush(30)
    finally:
        service.notifier.close()
        service.notifier = None
    failed = service.audit.records(event="airlock.mail.failed")
    # two submissions (checkers), two approvals and a release (requester)
    assert [r.details["notice"] for r in failed] == [
        "airlock.request.submitted", "airlock.request.submitted", "airlock.review.approved",
        "airlock.request.approved", "airlock.request.released"]
    for r in failed:
        assert r.outcome == "failure" and r.actor == "airlock"
        assert "ConnectionRefusedError" in r.details["error"]
    assert service.audit.records(event="airlock.mail.sent") == []


def test_smtp_settings_password_never_in_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ECLUSE_SMTP_PASSWORD", raising=False)
    assert SmtpSettings(host="smtp").password() is None
    with pytest.raises(ValueError, match="ECLUSE_SMTP_PASSWORD or airlock.smtp.password_file"):
        SmtpSettings(host="smtp", user="tre").password()
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    assert SmtpSettings(host="smtp", user="tre", password_file=secret).password() == "s3cret"
    monkeypatch.setenv("ECLUSE_SMTP_PASSWORD", "from-env")
    assert SmtpSettings(host="smtp", user="tre", password_file=secret).password() == "from-env"
    with pytest.raises(ValueError):
        SmtpSettings(host="smtp", password="in-the-yaml")  # no such key
    with pytest.raises(ValueError, match="needs starttls: true"):
        SmtpSettings(host="smtp", user="tre", starttls=False)


def test_the_deployment_mails_the_directory_checkers_at_their_ldap_address(
        settings, sink, tmp_path):
    """Production wiring against the real slapd: the members of ldap.output_checker_group,
    at their directory ``mail``; the requester at theirs; off without a host."""
    handler, port = sink
    assert notifier_for(settings, AirlockSettings(), None) is None
    conf = AirlockSettings(smtp=SmtpSettings(host="127.0.0.1", port=port, starttls=False,
                                             attempts=1))
    audit = _Records()
    notifier = notifier_for(settings, conf, audit)
    try:
        notifier.notify("airlock.request.submitted", request_id="req-1", project="cardio-los",
                        requester="alice", actor="alice", version=1)
        notifier.notify("airlock.request.rejected", request_id="req-1", project="cardio-los",
                        requester="alice", actor="carol", version=1)
        assert notifier.flush(30)
    finally:
        notifier.close()
    assert [m["to"] for m in handler.mails] == [
        ["carol@ecluse.test", "dan@ecluse.test"], ["alice@ecluse.test"]]
    assert [e[1]["recipients"] for e in audit.events] == [["carol", "dan"], ["alice"]]


class _Records:
    """An audit sink keeping what it is given (the notifier's own events only)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


def test_per_file_decisions_mail_the_requester_without_naming_the_file(
        service, mailing, users):
    """Each per-file decision tells the requester that one file was approved, or that
    changes were asked to one file, and the partial release that files left: never which
    file, nor the comment."""
    secret_name = "MARTIN_Paul_1958-11-30.csv"
    alice = users.alice
    rid = service.create_request(alice, project="cardio-los", title="t",
                                 justification="j")["id"]
    service.add_file(alice, rid, secret_name, [Files.ok[1]])
    service.add_file(alice, rid, *_pair(Files.fail))
    describe_all(service, alice, rid)  # needed to submit (issue 21 item 3)
    service.submit(alice, rid)
    files = {f["name"]: f["id"] for f in service.get_request(alice, rid,
                                                             record_view=False)["files"]}
    service.decide_file(users.carol, rid, files[secret_name], decision="approve")
    service.decide_file(users.dan, rid, files[secret_name], decision="approve")
    service.decide_file(users.dan, rid, files[Files.fail[0]], decision="request_changes",
                        comment="Martin's cell of 3")
    service.release_partial(users.carol, rid, comment="Martin's table only")
    assert service.notifier.flush(30)
    assert mailing.to("alice@hospital.example") == [
        f"[Écluse airlock] request {rid}: a file approved",
        f"[Écluse airlock] request {rid}: a file approved",
        f"[Écluse airlock] request {rid}: changes requested to a file",
        f"[Écluse airlock] request {rid} released",
    ]
    for m in mailing.mails:
        for text in (m["raw"], m["body"], m["subject"]):
            lowered = text.lower()
            for secret in ("martin", "1958-11-30", Files.fail[0], "counts_small", "cell of 3"):
                assert secret not in lowered, (secret, text)


class LanguagesMailbook(GroupsMailbook):
    """The test users' groups, and the language each gave the directory (preferredLanguage)."""

    LANGUAGES = {"carol": "en-GB", "dan": "fr", "erin": "de"}  # fay, alice: none

    def language(self, name: str) -> str | None:
        return self.LANGUAGES.get(name)


def test_mails_in_each_recipients_language(service, sink, users, create_request_at_status):
    """Each recipient reads the mail in their own language (the directory's
    preferredLanguage), else in the deployment's default, French: a mail has no browser.
    One mail per language; the recipients of one still never see each other."""
    handler, port = sink
    from ecluse.i18n import DEFAULT_LANGUAGE

    assert DEFAULT_LANGUAGE == "fr"
    service.notifier = _notifier(service, port, LanguagesMailbook(),
                                 default_language=DEFAULT_LANGUAGE)
    try:
        rid = create_request_at_status(State.SUBMITTED)["id"]
        service.review(users.carol, rid, decision="reject", comment="Row-level data")
        assert service.notifier.flush(30)
    finally:
        service.notifier.close()
        service.notifier = None
    link = f"{BASE_URL}/services/airlock/requests/{rid}"
    by_subject = {m["subject"]: m for m in handler.mails}
    assert sorted((m["to"], m["subject"]) for m in handler.mails) == sorted([
        # carol: en-GB; dan: fr; erin: de, which Écluse does not speak; fay: none
        (["carol@hospital.example"], f"[Écluse airlock] request {rid} awaits review"),
        (["dan@hospital.example", "erin@hospital.example", "fay@hospital.example"],
         f"[Sas d’Écluse] la demande {rid} attend une vérification"),
        # alice gave no language
        (["alice@hospital.example"], f"[Sas d’Écluse] demande {rid} refusée"),
    ])
    fr = by_subject[f"[Sas d’Écluse] demande {rid} refusée"]
    assert fr["message"]["Content-Language"] == "fr"
    assert fr["body"].replace("\r\n", "\n") == (  # SMTP line ends
        f"Un contrôleur des sorties a refusé votre demande {rid} du projet cardio-los.\n\n"
        f"Voir la demande (connexion par le hub) :\n{link}\n\n"
        "Ce message ne nomme aucun fichier et ne contient rien des fichiers : la page de la "
        "demande les montre.\n-- \nSas d’Écluse\n")
    en = by_subject[f"[Écluse airlock] request {rid} awaits review"]
    assert en["message"]["Content-Language"] == "en"
    assert en["body"].replace("\r\n", "\n").startswith(
        f"Request {rid} of project cardio-los was submitted for output checking.\n")
    assert link in en["body"]
    for m in handler.mails:  # the comment stays behind the sign-in, in any language
        assert "row-level" not in m["raw"].lower()
    # one audit record per notice, naming every recipient whatever their language
    sent = service.audit.records(event="airlock.mail.sent")
    assert [r.details["recipients"] for r in sent] == [
        ["carol", "dan", "erin", "fay"], ["alice"]]


def test_a_retry_sends_only_the_languages_not_yet_sent(service, sink, users):
    """The English mail went out (languages in order), the French one was refused: the
    retry sends the French one only, and the English checker does not get it twice."""
    handler, port = sink
    refused: list[str] = []
    original = handler.handle_DATA

    async def refuse_french_once(server, session, envelope):
        if "dan@hospital.example" in envelope.rcpt_tos and not refused:
            refused.append("dan")
            return "451 try again later"
        return await original(server, session, envelope)

    handler.handle_DATA = refuse_french_once
    notifier = _notifier(service, port, LanguagesMailbook(), default_language="fr")
    try:
        notifier.notify("airlock.request.submitted", request_id="req-1",
                        project="cardio-los", requester="alice", actor="alice", version=1)
        assert notifier.flush(30)
    finally:
        notifier.close()
    assert refused == ["dan"]
    assert [m["to"] for m in handler.mails] == [
        ["carol@hospital.example"],
        ["dan@hospital.example", "erin@hospital.example", "fay@hospital.example"]]
    assert [m["message"]["Content-Language"] for m in handler.mails] == ["en", "fr"]
