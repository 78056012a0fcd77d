"""Enrolment of the second factor in a browser (headless Debian Chromium), as a person
does it: password, QR code to scan, recovery codes, first code typed; then the next
sign-in with password and code."""

from __future__ import annotations

import re
import time

from ecluse.dev.testing import Authenticators, sign_in_page
from ecluse.hub.mfa import code_at, counter_at, provisioning_uri, qr_svg


def _path_of(svg: str) -> str:
    m = re.search(r'<path[^>]* d="([^"]+)"', svg)
    assert m, svg[:200]
    return m.group(1)


def test_enrolment_with_the_qr_code_then_sign_in_with_a_typed_code(hub_stack, ldap_passwords,
                                                                    browser_page):
    page, url = browser_page, hub_stack.url
    page.goto(f"{url}/hub/login")
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", ldap_passwords["carol"])
    page.click("#login_submit")
    # not signed in yet: the enrolment page, with a QR code an app can scan
    page.wait_for_selector("#mfa-qr svg")
    box = page.locator("#mfa-qr svg").bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    secret = page.inner_text("#mfa-secret").strip()
    # the QR code is the otpauth:// URI of this key, for carol, from Écluse
    uri = provisioning_uri(secret, "carol", hub_stack.settings.mfa.issuer)
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    assert page.get_attribute("#mfa-qr svg path", "d") == _path_of(qr_svg(uri))
    codes = page.locator("#mfa-recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    # the home page is still out of reach
    assert page.request.get(f"{url}/hub/api/user").status == 403

    # a wrong code first (the phone's clock is off): the page says so, same key
    window = hub_stack.settings.mfa.valid_window
    page.fill("#ecluse-mfa-enrol input[name=otp]",
              code_at(secret, counter_at(time.time()) - window - 3))
    page.click("#mfa_submit")
    page.wait_for_selector("#mfa-error")
    assert "not right" in page.inner_text("#mfa-error")
    assert page.inner_text("#mfa-secret").strip() == secret

    # the code the app shows now
    Authenticators.learn(url, "carol", secret, codes)
    page.fill("#ecluse-mfa-enrol input[name=otp]", Authenticators.code(secret))
    page.click("#mfa_submit")
    page.wait_for_url(re.compile(r".*/hub/(home|spawn).*"))
    assert page.request.get(f"{url}/hub/api/user").json()["name"] == "carol"

    # signed out, she signs in again with password and a fresh code
    page.goto(f"{url}/hub/logout")
    page.goto(f"{url}/hub/login")
    assert page.locator("input[name=otp]").count() == 1
    sign_in_page(page, url, "carol", ldap_passwords["carol"])
    assert page.request.get(f"{url}/hub/api/user").json()["name"] == "carol"

    # the password alone, typed in the browser: refused with the usual message
    page.goto(f"{url}/hub/logout")
    page.goto(f"{url}/hub/login")
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", ldap_passwords["carol"])
    page.click("#login_submit")
    page.wait_for_selector(".login_error")
    assert "Invalid username or password" in page.inner_text(".login_error")
