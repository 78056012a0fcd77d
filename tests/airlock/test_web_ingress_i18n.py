"""The airlock's import pages in French and English (issue 21 item 6 for the import
requests of issue 24 item 1), through the real hub and airlock of ``airlock_hub``: the
browser's ``Accept-Language`` chooses the language of the pages, their flash messages and
their fixed refusals; the API's error codes and messages stay as they are."""

from __future__ import annotations

import re

import pytest

from tests.airlock.test_web import _page_session
from tests.airlock.test_web_i18n import EN, FR, _lang

pytestmark = pytest.mark.timeout(300)

CSV = b"code,label\nI21,infarction\n"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 120


def _xsrf(html: str) -> str:
    return re.search(r'name="_xsrf" value="([^"]+)"', html).group(1)


def _open_import(airlock_hub, s) -> str:
    page = s.get(f"{airlock_hub.airlock_url}/imports", headers=FR, timeout=15).text
    r = s.post(f"{airlock_hub.airlock_url}/imports", headers=FR, timeout=60,
               allow_redirects=False,
               data={"_xsrf": _xsrf(page), "project": "cardio-los", "title": "Libellés CIM-10",
                     "justification": "table publique de l'OMS"},
               files=[("file", ("icd10.csv", CSV)), ("file", ("labels.csv", ELF))])
    assert r.status_code == 302, r.text
    return r.headers["Location"].rsplit("/", 1)[1]


def test_the_imports_pages_follow_the_browser_language(airlock_hub):
    s = _page_session(airlock_hub, "alice")
    iid = _open_import(airlock_hub, s)

    fr = s.get(f"{airlock_hub.airlock_url}/imports", headers=FR, timeout=15).text
    assert _lang(fr) == "fr"
    assert "Nouvel import" in fr and "New import" not in fr
    assert "Faire entrer des données ou du code dans un projet" in fr
    assert "Bring data or code" not in fr
    assert "dans <code>/project/inbox/&lt;request&gt;</code>, avec leur sha256" in fr
    assert "Ouvrir l’import" in fr and "Open the import" not in fr
    assert "Import de code (scripts" in fr
    assert "ouverte (pas encore soumise)" in fr and iid in fr
    assert "<th>Demandeur</th>" in fr and "<th>Requester</th>" not in fr

    en = s.get(f"{airlock_hub.airlock_url}/imports", headers=EN, timeout=15).text
    assert _lang(en) == "en"
    assert "New import" in en and "Nouvel import" not in en
    assert "Bring data or code into a project" in en and "Faire entrer" not in en
    assert "open (not yet submitted)" in en and "ouverte" not in en
    assert "<th>Requester</th>" in en

    # one import: its files' verdicts, the buttons, in the page's language
    fr = s.get(f"{airlock_hub.airlock_url}/imports/{iid}", headers=FR, timeout=15).text
    assert _lang(fr) == "fr"
    assert "Tous les imports" in fr and "Type (d’après le contenu)" in fr
    assert "accepté" in fr and "refusé" in fr and "Déposer en quarantaine" in fr
    assert ">Soumettre</button>" in fr and ">Submit</button>" not in fr
    # a check's reason is built with values (the file's name, what was found): as written
    assert "executable content (elf)" in fr
    en = s.get(f"{airlock_hub.airlock_url}/imports/{iid}", headers=EN, timeout=15).text
    assert "All imports" in en and "Type (by content)" in en
    assert "accepted" in en and "refused" in en and ">Submit</button>" in en
    assert "accepté" not in en and "Soumettre" not in en

    # a form's result in the language of the page that sent it
    r = s.post(f"{airlock_hub.airlock_url}/imports/{iid}/withdraw", headers=FR, timeout=30,
               data={"_xsrf": _xsrf(fr)})
    assert r.status_code == 200, r.text
    assert '<p class="flash">fait : retirer</p>' in r.text
    assert '<dd class="state">retirée</dd>' in r.text
    en = s.get(r.url, headers=EN, timeout=15).text
    assert '<dd class="state">withdrawn</dd>' in en


def test_an_import_refusal_in_the_page_language_and_unchanged_in_the_api(airlock_hub):
    s = _page_session(airlock_hub, "alice")
    page = s.get(f"{airlock_hub.airlock_url}/imports", headers=FR, timeout=15).text
    form = {"_xsrf": _xsrf(page), "project": "", "title": "t", "justification": "j"}
    r = s.post(f"{airlock_hub.airlock_url}/imports", headers=FR, data=form, timeout=30)
    assert r.status_code == 400
    assert "400: saisie invalide" in r.text
    assert "projet : identifiant de projet attendu" in r.text
    assert "expected a project slug" not in r.text
    r = s.post(f"{airlock_hub.airlock_url}/imports", headers=EN, data=form, timeout=30)
    assert r.status_code == 400 and "project: expected a project slug" in r.text
    # the API (a script's JSON): its code and English message, whatever the language asked
    r = airlock_hub.api("alice").post("/imports", headers=FR, json={
        "project": "", "title": "t", "justification": "j"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert r.json()["error"]["message"] == "project: expected a project slug"
