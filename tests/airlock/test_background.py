"""Background checks of uploaded files (issue 21 item 1): an upload answers before its
check, a request is submitted only once every file has its verdict, a restart finds
the files left ``checking``, and a check that fails is never ``pass``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ecluse.airlock.background import CHECKING
from ecluse.airlock.checks import InlineChecker
from ecluse.airlock.errors import StillChecking
from ecluse.airlock.service import AirlockService

from .conftest import CONTEXT, CONTROLS, GROUPS, Files

pytestmark = pytest.mark.timeout(300)

#: generous: the machine is shared; no assertion depends on it
WAIT = 240


class HeldChecker(InlineChecker):
    """The real checks, held until the test releases them; counts the checks begun."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.begun: list[str] = []
        self.ended: list[str] = []

    def __call__(self, object_path: Path, display_name: str, *args: Any, **kw: Any) -> dict:
        self.begun.append(display_name)
        self.gate.wait(WAIT)
        out = super().__call__(object_path, display_name, *args, **kw)
        self.ended.append(display_name)
        return out


class CrashingChecker(InlineChecker):
    """A checker whose worker dies (an exception instead of a report)."""

    def __call__(self, *args: Any, **kw: Any) -> dict:
        raise RuntimeError("check worker died")


class CheckingVerdictChecker(InlineChecker):
    """A (compromised) check that answers with the verdict ``checking`` itself."""

    def __call__(self, *args: Any, **kw: Any) -> dict:
        return {"report": {"verdict": CHECKING, "findings": []}, "preview": {"kind": "none"}}


def who(service: AirlockService, name: str) -> Any:
    return service.identity(name, GROUPS[name])


def draft(service: AirlockService, *files: tuple[str, bytes]) -> tuple[str, list[dict]]:
    alice = who(service, "alice")
    rid = service.create_request(alice, project="cardio-los", title="LOS tables",
                                 justification="For the paper")["id"]
    return rid, [service.add_file(alice, rid, name, [data]) for name, data in files]


def verdicts(service: AirlockService, rid: str) -> dict[str, str]:
    got = service.get_request(who(service, "alice"), rid, record_view=False)
    return {f["name"]: f["verdict"] for f in got["files"]}


@pytest.fixture
def held() -> Any:
    checker = HeldChecker()
    yield checker
    checker.gate.set()  # never leave a thread waiting


def test_upload_answers_before_its_check_ran(make_service, held):
    service = make_service(checker=held, background_checks=2)
    rid, (added,) = draft(service, Files.fail)
    assert added["verdict"] == CHECKING
    assert held.ended == []  # the answer came before any check ended
    assert added["needs_context"] is False and added["needs_override_reason"] is True
    assert verdicts(service, rid) == {Files.fail[0]: CHECKING}
    held.gate.set()
    service.checks.drain(WAIT)
    assert verdicts(service, rid) == {Files.fail[0]: "fail"}
    f = service.get_request(who(service, "alice"), rid, record_view=False)["files"][0]
    assert f["needs_context"] is True and f["findings"]
    checked = [r for r in service.audit.records() if r.event == "airlock.file.checked"]
    assert [(r.actor, r.details["verdict"]) for r in checked] == [("airlock", "fail")]


def test_submit_is_refused_while_a_file_is_being_checked(make_service, held):
    service = make_service(checker=held, background_checks=2)
    rid, added = draft(service, Files.ok, Files.fail)
    alice = who(service, "alice")
    service.describe_file(alice, rid, added[1]["id"], context=CONTEXT, controls=CONTROLS)
    with pytest.raises(StillChecking) as e:
        service.submit(alice, rid)
    assert "2 of its 2 file(s) are still being checked" in e.value.message
    assert e.value.status == 409 and e.value.code == "still_checking"
    assert service.get_request(alice, rid, record_view=False)["state"] == "draft"
    held.gate.set()
    service.checks.drain(WAIT)
    assert verdicts(service, rid) == {Files.ok[0]: "pass", Files.fail[0]: "fail"}
    assert service.submit(alice, rid)["state"] == "submitted"


def test_restart_requeues_the_files_left_checking(make_service):
    stopped = make_service(background_checks=1)
    stopped.checks.shutdown()  # the airlock stops before the check of the upload ran
    rid, (added,) = draft(stopped, Files.block)
    assert added["verdict"] == CHECKING
    restarted = make_service(background_checks=2)
    assert verdicts(restarted, rid) == {Files.block[0]: CHECKING}
    assert restarted.requeue_checks() == 1
    restarted.checks.drain(WAIT)
    assert verdicts(restarted, rid) == {Files.block[0]: "block"}
    assert restarted.requeue_checks() == 0


@pytest.mark.parametrize("checker", [CrashingChecker, CheckingVerdictChecker])
def test_a_check_that_fails_is_never_pass(make_service, checker):
    service = make_service(checker=checker(), background_checks=1)
    rid, _ = draft(service, Files.ok)  # a table that passes when checked
    service.checks.drain(WAIT)
    f = service.get_request(who(service, "alice"), rid, record_view=False)["files"][0]
    assert f["verdict"] == "review"
    assert f["needs_override_reason"] is True and f["needs_context"] is True
    assert "review by hand" in str(f["report"])


def test_a_file_replaced_while_checked_keeps_the_verdict_of_the_new_bytes(make_service, held):
    service = make_service(checker=held, background_checks=2)
    rid, _ = draft(service, ("table.csv", Files.fail[1]))
    alice = who(service, "alice")
    service.add_file(alice, rid, "table.csv", [Files.ok[1]])  # replaced, still checking
    held.gate.set()
    service.checks.drain(WAIT)
    assert verdicts(service, rid) == {"table.csv": "pass"}


def test_attack_submit_racing_the_check(make_service, held):
    """Submits hammered from several threads while the check ends: none goes through
    before the verdict is stored, and the verdict then asks for context."""
    service = make_service(checker=held, background_checks=2)
    rid, _ = draft(service, Files.fail)
    alice = who(service, "alice")
    outcomes: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                outcomes.append(service.submit(alice, rid)["state"])
                return
            except StillChecking:
                outcomes.append("checking")
            except Exception as e:  # noqa: BLE001 - the refusal once judged
                outcomes.append(type(e).__name__)
                if len(outcomes) > 50:
                    return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    held.gate.set()
    service.checks.drain(WAIT)
    stop.set()
    for t in threads:
        t.join(WAIT)
    # the fail file has no context: no submit may succeed, before or after the verdict
    assert "submitted" not in outcomes
    got = service.get_request(alice, rid, record_view=False)
    assert got["state"] == "draft" and got["files"][0]["verdict"] == "fail"
    # once described, it goes through, and the submit event follows the verdict
    service.describe_file(alice, rid, got["files"][0]["id"], context=CONTEXT,
                          controls=CONTROLS)
    assert service.submit(alice, rid)["state"] == "submitted"
    events = [r.event for r in service.audit.records()
              if r.event in ("airlock.file.checked", "airlock.request.submitted")]
    assert events == ["airlock.file.checked", "airlock.request.submitted"]


def test_the_request_page_shows_a_file_being_checked(make_service, held):
    """The page the requester reads (``request.html`` with the app's environment, as
    ``RequestPage`` renders it), in English and French."""
    from markupsafe import Markup

    from ecluse.airlock.web.app import template_environment
    from ecluse.i18n import rendering

    service = make_service(checker=held, background_checks=1)
    rid, _ = draft(service, Files.fail)
    env = template_environment()

    def page(lang: str = "en") -> str:
        req = service.get_request(who(service, "alice"), rid, record_view=False)
        with rendering(lang):
            return env.get_template("request.html").render(
                req=req, flash="", prefix="/services/airlock/", hub_home="/hub/home",
                identity=who(service, "alice"), xsrf_form_html=Markup(""), ecluse_lang=lang,
                ecluse_lang_url="/services/airlock/language/",
                static=lambda path: "/static/" + path)

    shown = page()
    assert "being checked" in shown and 'class="being-checked"' in shown
    assert "en cours de vérification" in page("fr")
    held.gate.set()
    service.checks.drain(WAIT)
    shown = page()
    assert "being checked" not in shown and "verdict-fail" in shown


def test_a_check_ending_while_the_airlock_stops_leaves_the_file_checking(make_service, held):
    """Its sandbox may have been stopped under it: no verdict from it, checked again at start."""
    service = make_service(checker=held, background_checks=1)
    rid, _ = draft(service, Files.ok)
    service.checks.shutdown()
    held.gate.set()
    service.checks.drain(WAIT)  # the check under way, not cancelled, ends
    assert held.ended == [Files.ok[0]]  # it ran to its end...
    assert verdicts(service, rid) == {Files.ok[0]: CHECKING}  # ...and nothing was stored
    restarted = make_service(background_checks=1)
    assert restarted.requeue_checks() == 1
    restarted.checks.drain(WAIT)
    assert verdicts(restarted, rid) == {Files.ok[0]: "pass"}
