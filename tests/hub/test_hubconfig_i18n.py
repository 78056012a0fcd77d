"""Écluse's hub pages in French and English, rendered by a Jinja environment made as
JupyterHub makes its own (``JupyterHub.init_tornado_settings``: its templates under the
``templates/`` prefix, then ``template_paths``) from the options the hub configuration
gives it. The pages a test cannot reach without starting a workspace (spawn, spawn
pending) are checked here; all of them through a real hub in
``tests/airlock/test_web_i18n.py``."""

from __future__ import annotations

import os
from types import SimpleNamespace

import jupyterhub
import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from traitlets.config import Config

from ecluse.config import load_settings
from ecluse.hub.hubconfig import configure
from ecluse.i18n import LanguageHandler

#: JupyterHub's own templates, as the hub finds them (``_template_paths_default``)
JUPYTERHUB_TEMPLATES = os.path.join(jupyterhub.__path__[0], os.pardir, os.pardir, os.pardir,
                                    os.pardir, "share", "jupyterhub", "templates")

#: page -> (its namespace, what it says in French, in English)
PAGES = {
    "login.html": ({"authenticator": SimpleNamespace(request_otp=True,
                                                      otp_prompt="Code from your authenticator "
                                                      "app (or a recovery code):"),
                    "authenticator_login_url": "/hub/login", "login_error": None,
                    "announcement_login": "Écluse — sign in with your hospital account."},
                   ["Se connecter", "Identifiant :", "Code de votre application",
                    "connectez-vous avec votre compte"],
                   ["Sign in", "Username:", "Code from your authenticator app",
                    "sign in with your hospital account"]),
    "spawn.html": ({"url": "/hub/spawn/alice/cardio-los", "spawner_options_form": "<h4>x</h4>",
                    "error_message": "This workspace is for project 'a', not 'b'.",
                    "for_user": None},
                   ["Démarrer un espace de travail", ">Démarrer</button>", "Erreur : This"],
                   ["Start a workspace", ">Start</button>", "Error: This"]),
    "spawn_pending.html": ({}, ["Votre espace de travail démarre.", "Journal des événements",
                                "Arrêter l’espace de travail"],
                           ["Your workspace is starting up.", "Event log", "Stop the workspace"]),
    "token.html": ({"api_tokens": [], "oauth_clients": [],
                    "token_expires_in_options_html": ""},
                   ["Demander un nouveau jeton d’API", "Le jeton expire dans"],
                   ["Request new API token", "Token expires in"]),
    "error.html": ({"status_code": 503, "status_message": "Service Unavailable",
                    "message": "Sign-in is unavailable: the directory (LDAP) did not answer in "
                    "time. Running workspaces are not affected. Please try again in a few "
                    "minutes."},
                   ["503 : Service indisponible", "l’annuaire (LDAP) n’a pas répondu"],
                   ["503 : Service Unavailable", "the directory (LDAP) did not answer"]),
    "404.html": ({"status_code": 404}, ["404 : Introuvable", "Cette page n’existe pas."],
                 ["404 : Not Found", "There is no such page."]),
    "home.html": ({"spawners": [], "ecluse_projects": {}},
                  ["Vos projets", "Vous n’êtes membre d’aucun projet.", "Accueil"],
                  ["Your projects", "You are not a member of any project.", "Home"]),
    "ecluse-mfa-enrol.html": ({"qr": "", "secret": "ABC", "username": "alice",
                               "recovery_codes": ["1"], "enrol_url": "/hub/mfa/enrol",
                               "next": "", "ticket": "t",
                               "error": "That code is not right: check your phone's clock "
                               "and type the code your app shows now."},
                              ["Configurer votre second facteur", "Ce code n’est pas le bon"],
                              ["Set up your second factor", "That code is not right"]),
}


@pytest.fixture
def hub_templates(make_config):
    """The environment of the hub configured by ``ecluse.hub.hubconfig``."""
    c = Config()
    configure(c, load_settings(make_config()))
    options = dict(autoescape=True)
    options.update(c.JupyterHub.jinja_environment_options)
    loader = ChoiceLoader([
        PrefixLoader({"templates": FileSystemLoader([JUPYTERHUB_TEMPLATES])}, "/"),
        FileSystemLoader([*c.JupyterHub.template_paths, JUPYTERHUB_TEMPLATES]),
    ])
    return c, Environment(loader=loader, **options)


def _namespace(extra: dict, lang: str) -> dict:
    user = SimpleNamespace(name="alice", json_escaped_name="alice", groups=[], spawners={},
                           spawner=SimpleNamespace(options_form=None))
    return {"base_url": "/hub/", "prefix": "/", "user": user, "login_url": "/hub/login",
            "logout_url": "/hub/logout", "static_url": lambda path, **kw: "/hub/static/" + path,
            "version_hash": "", "services": [], "parsed_scopes": set(), "xsrf": "x",
            "xsrf_token": "x", "login_service": "", "ecluse_lang": lang, **extra}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_each_hub_page_in_french_and_english(hub_templates, page):
    _, env = hub_templates
    extra, french, english = PAGES[page]
    fr = env.get_template(page).render(**_namespace(extra, "fr"))
    en = env.get_template(page).render(**_namespace(extra, "en"))
    for text in french:
        assert text in fr, (page, text)
        assert text not in en, (page, text)
    for text in english:
        assert text in en, (page, text)
    # the FR|EN switch on every page
    assert 'id="ecluse-lang-switch"' in fr and 'href="/hub/ecluse/language/en' in fr


def test_the_hub_config_adds_the_extension_and_the_switch(hub_templates):
    c, _ = hub_templates
    assert c.JupyterHub.jinja_environment_options["extensions"] == ["ecluse.i18n.EcluseI18n"]
    assert (r"/ecluse/language/(fr|en)", LanguageHandler) in c.JupyterHub.extra_handlers


def test_spawn_pages_keep_jupyterhubs_form_and_scripts(hub_templates):
    _, env = hub_templates
    html = env.get_template("spawn.html").render(**_namespace(PAGES["spawn.html"][0], "fr"))
    for part in ('id="spawn_form"', 'action="/hub/spawn/alice/cardio-los"',
                 'enctype="multipart/form-data"', "<h4>x</h4>", "feedback-container"):
        assert part in html, part
    html = env.get_template("spawn_pending.html").render(**_namespace({}, "fr"))
    for part in ('id="progress-bar"', 'id="progress-log"', 'id="stop-server-btn"',
                 "api.stop_server", "EventSource"):
        assert part in html, part


def test_the_identity_providers_button_in_both_languages(hub_templates):
    """``hub.authenticator: oidc``: the button, with ``oidc.login_service``'s default
    translated too (a deployment's own name for it is shown as written)."""
    _, env = hub_templates
    ns = {"login_service": "your hospital account", "authenticator_login_url": "/hub/oauth"}
    fr = env.get_template("login.html").render(**_namespace(ns, "fr"))
    assert "Se connecter avec votre compte de l’hôpital" in fr and 'name="password"' not in fr
    en = env.get_template("login.html").render(**_namespace(ns, "en"))
    assert "Sign in with your hospital account" in en
    ns["login_service"] = "AP-HP"
    assert "Se connecter avec AP-HP" in env.get_template("login.html").render(
        **_namespace(ns, "fr"))
