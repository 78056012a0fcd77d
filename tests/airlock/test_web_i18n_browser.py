"""A French browser signs in and reads the hub and the airlock in French; the FR|EN
switch turns both to English (headless Debian Chromium, Playwright)."""

from __future__ import annotations

import pytest

from tests.airlock.hubstack import password
from tests.airlock.pgserver import TMP_PREFIX
from tests.support.browser import CHROMIUM, chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture
def french_browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with chromium_page(prefix=TMP_PREFIX, timeout_ms=20000, locale="fr-FR") as page:
        yield page


def test_a_french_browser_reads_french_and_the_switch_turns_both_to_english(
        airlock_hub, french_browser):
    page = french_browser
    page.goto(airlock_hub.airlock_url + "/")
    # the hub's sign-in page, in French, with JupyterHub's own form
    page.wait_for_selector("input[name=username]")
    assert page.locator("h1").inner_text() == "Se connecter"
    assert page.locator("label[for=username_input]").inner_text() == "Identifiant :"
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", password("ada"))
    page.click("#login_submit")
    page.wait_for_url(airlock_hub.airlock_url + "/**")
    if not page.url.rstrip("/").endswith("/services/airlock"):
        page.goto(airlock_hub.airlock_url + "/")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("#mine h2").inner_text() == "Vos demandes de sortie"

    # the switch: English, here and on the hub
    page.click(".lang-switch a.lang-en")
    page.wait_for_selector("html[lang=en]")
    assert page.url.rstrip("/").endswith("/services/airlock")
    assert page.locator("#mine h2").inner_text() == "Your export requests"
    page.goto(airlock_hub.url + "/hub/home")
    assert page.locator("h1").first.inner_text() == "Your projects"
    assert page.locator("html").get_attribute("lang") == "en"

    # and back to French from the hub's switch
    page.click("#ecluse-lang-switch a.lang-fr")
    page.wait_for_selector("text=Vos projets")
    assert page.url.endswith("/hub/home")
    assert page.locator("html").get_attribute("lang") == "fr"
    page.goto(airlock_hub.airlock_url + "/")
    assert page.locator("html").get_attribute("lang") == "fr"
