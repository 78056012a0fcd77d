"""The airlock's pages and the hub's Écluse pages in French and English, through the real
hub of the airlock suite (``ecluse.i18n``): the browser's ``Accept-Language`` chooses,
the FR|EN switch's cookie ``ecluse_lang`` wins, for the hub and the airlock alike."""

from __future__ import annotations

import re

import pytest
import requests

pytestmark = pytest.mark.timeout(180)

FR = {"Accept-Language": "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def _page_session(airlock_hub, user: str) -> requests.Session:
    s = airlock_hub.login(user)
    r = s.get(airlock_hub.airlock_url + "/", timeout=15)  # OAuth dance with the hub
    assert r.status_code == 200 and r.url.rstrip("/") == airlock_hub.airlock_url
    return s


def _request(airlock_hub) -> str:
    r = airlock_hub.api("alice").post("/requests", json={
        "project": "cardio-los", "title": "Tables LOS", "justification": "Article 1"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _html(r: requests.Response) -> str:
    """A hub page's text (JupyterHub's pages name no charset: UTF-8, as they are)."""
    r.encoding = "utf-8"
    return r.text


def _lang(html: str) -> str:
    return re.search(r'<html lang="([a-z]+)"', html).group(1)


def test_airlock_pages_follow_the_browser_language(airlock_hub):
    rid = _request(airlock_hub)
    s = _page_session(airlock_hub, "alice")
    home = s.get(airlock_hub.airlock_url + "/", headers=FR, timeout=15).text
    assert _lang(home) == "fr"
    assert "Vos demandes de sortie" in home and "Your export requests" not in home
    assert rid in home and "brouillon" in home
    # the switch: a link to English back to this page, French shown as the current one
    assert 'href="/services/airlock/language/en?next=/services/airlock/"' in home
    assert '<strong lang="fr">FR</strong>' in home
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", headers=FR, timeout=15).text
    assert 'id="state">brouillon' in page and "Fichiers (version 1)" in page
    assert "Historique" in page and "Pas encore de fichier." in page

    home = s.get(airlock_hub.airlock_url + "/", headers=EN, timeout=15).text
    assert _lang(home) == "en"
    assert "Your export requests" in home and "Vos demandes" not in home
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", headers=EN, timeout=15).text
    assert 'id="state">draft' in page and "Files (version 1)" in page
    # a language Écluse does not speak: the deployment's default, French
    home = s.get(airlock_hub.airlock_url + "/", headers={"Accept-Language": "de-DE,de"},
                 timeout=15).text
    assert _lang(home) == "fr"


def test_airlock_errors_and_flash_messages_in_the_page_language(airlock_hub):
    s = _page_session(airlock_hub, "alice")
    r = s.get(airlock_hub.airlock_url + "/no/such/page", headers=FR, timeout=15)
    assert r.status_code == 404
    assert "404: erreur" in r.text and "page introuvable" in r.text
    assert "Retour au sas" in r.text
    r = s.get(airlock_hub.airlock_url + "/no/such/page", headers=EN, timeout=15)
    assert "404: error" in r.text and "page not found" in r.text
    # a form's result (the flash message) in the language of the page that sent it
    rid = _request(airlock_hub)
    page = s.get(f"{airlock_hub.airlock_url}/requests/{rid}", headers=FR, timeout=15).text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    r = s.post(f"{airlock_hub.airlock_url}/requests/{rid}/withdraw", headers=FR,
               data={"_xsrf": xsrf, "comment": "mauvais tableau"}, timeout=15)
    assert r.status_code == 200
    assert '<p class="flash">fait : retirer</p>' in r.text
    assert 'id="state">retirée' in r.text


def test_the_switch_cookie_wins_on_the_airlock_and_the_hub(airlock_hub):
    """One cookie for both: switched on an airlock page, the hub's pages follow, and back."""
    rid = _request(airlock_hub)
    s = _page_session(airlock_hub, "alice")
    back = f"/services/airlock/requests/{rid}"
    r = s.get(f"{airlock_hub.url}/services/airlock/language/en", params={"next": back},
              headers=FR, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"] == back
    assert s.cookies.get("ecluse_lang", path="/") == "en"
    page = s.get(airlock_hub.url + back, headers=FR, timeout=15).text
    assert _lang(page) == "en" and 'id="state">draft' in page
    hub_home = s.get(f"{airlock_hub.url}/hub/home", headers=FR, timeout=15).text
    assert "Your projects" in hub_home and "Vos projets" not in hub_home

    # and back to French from the hub's own switch, with an English browser
    r = s.get(f"{airlock_hub.url}/hub/ecluse/language/fr", params={"next": "/hub/home"},
              headers=EN, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and r.headers["Location"] == "/hub/home"
    assert s.cookies.get("ecluse_lang", path="/") == "fr"
    hub_home = _html(s.get(f"{airlock_hub.url}/hub/home", headers=EN, timeout=15))
    assert "Vos projets" in hub_home and 'id="ecluse-lang-switch"' in hub_home
    page = s.get(airlock_hub.url + back, headers=EN, timeout=15).text
    assert _lang(page) == "fr" and 'id="state">brouillon' in page


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/",
                                    "/\\evil.example"])
def test_the_switch_never_sends_elsewhere(airlock_hub, target):
    for path in ("/services/airlock/language/fr", "/hub/ecluse/language/fr"):
        r = requests.get(airlock_hub.url + path, params={"next": target},
                         allow_redirects=False, timeout=15)
        assert r.status_code == 302 and r.headers["Location"] == "/", (path, r.headers)
    r = requests.get(airlock_hub.url + "/hub/ecluse/language/de", allow_redirects=False,
                     timeout=15)
    assert r.status_code == 404 and "ecluse_lang" not in r.headers.get("Set-Cookie", "")


def test_hub_sign_in_page_in_both_languages_with_jupyterhubs_form(airlock_hub):
    fr = _html(requests.get(f"{airlock_hub.url}/hub/login", headers=FR, timeout=15))
    assert "<h1>Se connecter</h1>" in fr and "Identifiant :" in fr and "Mot de passe :" in fr
    assert "Sign in" not in fr and 'id="ecluse-lang-switch"' in fr
    # the announcement of the deployment, translated too
    assert "connectez-vous avec votre compte de l’hôpital" in fr
    en = _html(requests.get(f"{airlock_hub.url}/hub/login", headers=EN, timeout=15))
    assert "<h1>Sign in</h1>" in en and "Username:" in en and "Se connecter" not in en
    for html in (fr, en):  # JupyterHub's form, as it was
        for field in ('name="username"', 'name="password"', 'name="_xsrf"',
                      'id="login_submit"', 'method="post"'):
            assert field in html, field
    # and it still signs in (the harness signs in through this very form)
    assert _page_session(airlock_hub, "bob") is not None


def test_hub_home_token_and_error_pages_in_both_languages(airlock_hub):
    s = airlock_hub.login("alice")
    home = _html(s.get(f"{airlock_hub.url}/hub/home", headers=FR, timeout=15))
    assert "Vos projets" in home and "Jeux de données" in home and "Accueil" in home
    assert "Déconnexion" in home
    token = _html(s.get(f"{airlock_hub.url}/hub/token", headers=FR, timeout=15))
    assert "Demander un nouveau jeton d’API" in token and 'id="request-token-form"' in token
    assert "Request new API token" not in token
    token = s.get(f"{airlock_hub.url}/hub/token", headers=EN, timeout=15).text
    assert "Request new API token" in token
    r = s.get(f"{airlock_hub.url}/hub/no-such-page", headers=FR, timeout=15)
    assert r.status_code == 404
    assert "404 : Introuvable" in _html(r) and "Cette page n’existe pas." in _html(r)
    r = s.get(f"{airlock_hub.url}/hub/no-such-page", headers=EN, timeout=15)
    assert r.status_code == 404 and "404 : Not Found" in r.text
