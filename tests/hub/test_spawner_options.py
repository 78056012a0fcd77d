"""The spawner's options (issue 22): the home page's one-click start through the query
(``?opt-project=<slug>``), the form kept for a bare ``/hub/spawn``, and the workspace's
language from the user's choice or the browser's ``Accept-Language`` at spawn.

Through the real hub and Chromium: ``tests/functional/test_first_day.py``."""

from __future__ import annotations

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from ecluse.config import load_settings
from ecluse.hub.spawner import EcluseSpawner
from tests.support.doubles import SignedInUser


class SpawnRequestFrom:
    """The hub's handler of a spawn, as the spawner reads it: a real request whose
    browser sent ``accept_language``."""

    def __init__(self, accept_language: str | None):
        headers = HTTPHeaders({"Host": "127.0.0.1"})
        if accept_language is not None:
            headers["Accept-Language"] = accept_language
        self.request = HTTPServerRequest(
            start_line=RequestStartLine("GET", "/hub/spawn/alice/cardio-los", "HTTP/1.1"),
            headers=headers)


@pytest.fixture
def spawner_for(make_config):
    settings = load_settings(make_config(**{"hub.spawner": "ecluse"}))

    def make(server: str, groups=("cardio-los", "air-quality")) -> EcluseSpawner:
        return EcluseSpawner(user=SignedInUser("alice", list(groups)), hub=Hub(),
                             orm_spawner=orm.Spawner(name=server), settings=settings)

    return make


def test_the_home_pages_query_starts_that_project(spawner_for):
    spawner = spawner_for("cardio-los")
    assert spawner.options_from_query({"project": ["cardio-los"]}) == {"project": "cardio-los"}
    assert spawner.options_from_query({"project": ["cardio-los"], "locale": ["fr_FR"]}) == {
        "project": "cardio-los", "locale": "fr_FR"}
    # the language alone: this server's project
    assert spawner.options_from_query({"locale": ["fr_FR"]}) == {
        "project": "cardio-los", "locale": "fr_FR"}


@pytest.mark.parametrize(("server", "groups", "query", "message"), [
    ("cardio-los", ("cardio-los",), {"project": ["air-quality"]}, "not 'air-quality'"),
    ("air-quality", ("cardio-los",), {"project": ["air-quality"]}, "not a member"),
    ("", ("cardio-los",), {"project": ["cardio-los"]}, "Choose a project"),
])
def test_a_query_the_server_cannot_start_falls_back_to_the_form(spawner_for, server, groups,
                                                                 query, message):
    """The hub shows the options form with the message when options_from_query raises."""
    with pytest.raises(ValueError, match=message):
        spawner_for(server, groups).options_from_query(query)


def test_the_form_offers_the_projects_and_the_language(spawner_for):
    form = spawner_for("")._options_form(None)
    assert 'id="project-cardio-los"' in form and 'id="project-air-quality"' in form
    assert '<select class="form-control" name="locale"' in form
    assert '<option value="fr_FR">Français</option>' in form
    assert spawner_for("").options_from_form({"project": ["cardio-los"], "locale": [""]}) == {
        "project": "cardio-los"}


@pytest.mark.parametrize(("choice", "accept", "expected"), [
    (None, "fr-FR,fr;q=0.9,en;q=0.8", "fr_FR"),
    (None, "en-GB,en;q=0.9", "en"),
    (None, None, "en"),
    ("en", "fr-FR,fr;q=0.9", "en"),  # the user's choice wins over the browser
    ("fr_FR", "en-US", "fr_FR"),
])
def test_the_workspace_language(spawner_for, choice, accept, expected):
    spawner = spawner_for("cardio-los")
    spawner.handler = SpawnRequestFrom(accept)
    spawner.user_options = {"project": "cardio-los", **({"locale": choice} if choice else {})}
    assert spawner.workspace_locale() == expected


def test_a_spawn_without_a_request_is_in_english(spawner_for):
    spawner = spawner_for("cardio-los")  # the hub restarting it, the API: no browser
    spawner.user_options = {"project": "cardio-los"}
    assert spawner.workspace_locale() == "en"
