"""A researcher's first day, in headless Chromium through the real stack (issue 22).

* **One click:** *start* on the hub's home page goes to the spawn progress and
  on into JupyterLab, with no options form; a bare ``/hub/spawn`` keeps the form.
* **French:** a workspace started from a French browser shows JupyterLab in
  French (its settings' ``locale``), and the workspace extension's menu entries too.
* **Nothing phones home:** no news prompt, the announcements plugin disabled
  in the page config, and no connection attempted by a fresh workspace in its
  first minute to anything but the hub side: every packet from the workspace's
  veth that reaches a drop rule of ``table inet ecluse`` is recorded in a set
  of our own (inserted just before those drop rules), which must stay empty for
  that veth; a connection made on purpose from the sandbox's namespace
  afterwards shows the recording works.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ecluse.dev.testing import HubClient, sign_in_page
from ecluse.sandbox import network, sandbox_for

pytestmark = [pytest.mark.root, pytest.mark.browser, pytest.mark.timeout(600)]

#: how long a fresh workspace is watched
WATCH_SECONDS = 60


def lab_config(page) -> dict:
    """The page config JupyterLab was served with (``#jupyter-config-data``)."""
    return json.loads(page.locator("#jupyter-config-data").text_content())


def lab_setting(page, base: str, plugin: str, key: str):
    """A JupyterLab setting as the page gets it: the user's, else the default (the
    schema's, with the deployment's overrides)."""
    r = page.request.get(f"{base}lab/api/settings/{plugin}")
    assert r.ok, r.text()
    data = r.json()
    if key in (data.get("settings") or {}):
        return data["settings"][key]
    return data["schema"]["properties"][key]["default"]


def wait_for_lab(page) -> None:
    page.wait_for_url(re.compile(r".*/lab.*"), timeout=180000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120000)
    page.wait_for_selector(".jp-DirListing-content .jp-DirListing-item, "
                           ".jp-DirListing-content", timeout=120000)


def menu_labels(page) -> list[str]:
    page.wait_for_selector(".lm-Menu")
    return [t.strip() for t in page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts()]


def start_from_home(page, stack, slug: str) -> list[str]:
    """Click *start* on the home page; return the URLs the page went through."""
    visited: list[str] = []
    page.on("framenavigated", lambda f: visited.append(f.url) if f == page.main_frame else None)
    page.goto(f"{stack.url}/hub/home")
    page.locator(f"#start-{slug}").click()
    wait_for_lab(page)
    return visited


def test_french_researcher_one_click_into_jupyterlab_in_french(workspace_hub, ldap_passwords,
                                                                 browser_page_fr):
    stack, page = workspace_hub, browser_page_fr
    sign_in_page(page, stack.url, "alice", ldap_passwords["alice"])
    page.goto(f"{stack.url}/hub/home")
    start = page.locator("#start-cardio-los")
    assert start.get_attribute("href").endswith(
        "/hub/spawn/alice/cardio-los?opt-project=cardio-los")

    visited = start_from_home(page, stack, "cardio-los")
    # one click: the spawn progress, never the form, then JupyterLab
    assert any("/hub/spawn-pending/alice/cardio-los" in u for u in visited), visited
    assert not any(re.search(r"/hub/spawn/alice/cardio-los(\?|$)", u) and "opt-project" not in u
                   for u in visited), visited
    assert "/user/alice/cardio-los/" in page.url

    # JupyterLab in French: the setting the spawner chose, and the menus
    base = f"{stack.url}/user/alice/cardio-los/"
    assert lab_setting(page, base, "@jupyterlab/translation-extension:plugin",
                       "locale") == "fr_FR"
    page.locator(".lm-MenuBar-itemLabel", has_text="Fichier").first.wait_for(timeout=60000)

    # the workspace extension's strings, through JupyterLab's translation API
    page.locator('.jp-SideBar li[data-id="ecluse-airlock-panel"]').wait_for()
    assert page.locator('.jp-SideBar li[data-id="ecluse-airlock-panel"]').get_attribute(
        "title").startswith("Demandes d’export"), "the Airlock panel's caption is not French"
    page.goto(f"{stack.url}/user/alice/cardio-los/lab/tree/home/alice")
    page.wait_for_selector(".jp-DirListing-content")
    page.locator(".jp-DirListing-content").click(button="right")
    page.keyboard.press("Escape")
    # a file to right-click (the home folder may be empty)
    page.locator(".lm-MenuBar-itemLabel", has_text="Fichier").first.click()
    page.locator(".lm-Menu .lm-Menu-item", has_text="Nouveau").first.hover()
    page.locator(".lm-Menu .lm-Menu-item", has_text="Fichier texte").first.click()
    page.wait_for_selector(".jp-FileEditor")
    page.goto(f"{stack.url}/user/alice/cardio-los/lab/tree/home/alice")
    item = page.locator(".jp-DirListing-content .jp-DirListing-item[data-isdir='false']").first
    item.wait_for()
    item.click()
    item.click(button="right")
    labels = menu_labels(page)
    assert "Demander l’export…" in labels, labels
    assert "Request export…" not in labels, labels
    assert "Vérifier avant l’export" in labels, labels  # Check for export (check.ts)


def test_a_bare_spawn_keeps_the_form(workspace_hub, ldap_passwords):
    c = HubClient(workspace_hub.url)
    assert c.login("alice", ldap_passwords["alice"]).status_code == 302
    r = c.session.get(f"{workspace_hub.url}/hub/spawn", timeout=30)
    assert r.status_code == 200, r.text
    assert 'id="project-cardio-los"' in r.text and 'id="project-air-quality"' in r.text
    assert 'name="locale"' in r.text and 'value="fr_FR"' in r.text
    # a named project's page without the project in its query: the form, for that one
    r = c.session.get(f"{workspace_hub.url}/hub/spawn/alice/air-quality", timeout=30)
    assert r.status_code == 200 and 'id="project-air-quality"' in r.text, r.text
    assert 'id="project-cardio-los"' not in r.text
    # a query naming another project starts nothing: the form, with why
    r = c.session.get(f"{workspace_hub.url}/hub/spawn/alice/air-quality?opt-project=cardio-los",
                timeout=30)
    assert "not &#39;cardio-los&#39;" in r.text or "not 'cardio-los'" in r.text, r.text
    token = c.new_token("alice")
    servers = c.api("GET", "/users/alice", token).json()["servers"]
    assert "air-quality" not in servers, servers


# ------------------------------------------------------------ nothing phones home

SET = "test_first_day_seen"


def _rules(chain: str) -> list[dict]:
    out = subprocess.run(["nft", "-a", "-j", "list", "chain", "inet", network.TABLE, chain],
                         capture_output=True, text=True, check=True).stdout
    return [i["rule"] for i in json.loads(out)["nftables"] if "rule" in i]


def _is_veth_drop(rule: dict) -> bool:
    text = json.dumps(rule["expr"])
    return f'"{network.VETH_PREFIX}*"' in text and '"drop"' in text and '"iifname"' in text


#: a chain of the test's own in our table, before the host's routing decision
PRE_CHAIN = "test_first_day_pre"


@contextmanager
def recorded_drops() -> Iterator[callable]:
    """Record every IPv4 packet from a sandbox veth that tries to leave the workspace, as
    ``veth . source . destination . protocol`` in a dynamic set of our table: one to the
    host that reaches the input chain's ``iifname "eclv*" drop``, and one to any address
    that is not the host's, as it arrives (a chain of its own on the prerouting hook).

    Not at the forward chain: a host that does not forward (``net.ipv4.ip_forward=0``,
    Debian's default) drops such a packet at its routing decision, before the forward
    hook, and the recording saw nothing (a CI machine booted that way). Yields
    ``seen(veth)``; removes the set, the chain and the rules afterwards."""
    if not network.table_exists():
        pytest.fail(f"no nftables table inet {network.TABLE}: the stack is not up")
    what = "{ iifname . ip saddr . ip daddr . meta l4proto }"
    record = f'iifname "{network.VETH_PREFIX}*" meta nfproto ipv4 add @{SET} {what}'
    subprocess.run(["nft", "add", "set", "inet", network.TABLE, SET,
                    "{ type ifname . ipv4_addr . ipv4_addr . inet_proto; flags dynamic; }"],
                   check=True)
    added: list[tuple[str, int]] = []
    chain_made = False
    try:
        drop = next(r for r in _rules("input") if _is_veth_drop(r))
        subprocess.run(f"nft insert rule inet {network.TABLE} input position "
                       f"{drop['handle']} {record} comment \"test_first_day\"",
                       shell=True, check=True)
        added += [("input", r["handle"]) for r in _rules("input")
                  if r.get("comment") == "test_first_day"]
        subprocess.run(f"nft add chain inet {network.TABLE} {PRE_CHAIN} "
                       "'{ type filter hook prerouting priority raw; policy accept; }'",
                       shell=True, check=True)
        chain_made = True
        subprocess.run(f'nft add rule inet {network.TABLE} {PRE_CHAIN} iifname '
                       f'"{network.VETH_PREFIX}*" meta nfproto ipv4 fib daddr type != local '
                       f"add @{SET} {what}", shell=True, check=True)

        def seen(veth: str) -> list[str]:
            out = subprocess.run(["nft", "-j", "list", "set", "inet", network.TABLE, SET],
                                 capture_output=True, text=True, check=True).stdout
            sets = [i["set"] for i in json.loads(out)["nftables"] if "set" in i]
            elems = [_concat(e) for s in sets for e in s.get("elem", []) or []]
            return [" . ".join(map(str, c)) for c in elems if c and c[0] == veth]

        yield seen
    finally:
        for chain, handle in added:
            subprocess.run(["nft", "delete", "rule", "inet", network.TABLE, chain,
                            "handle", str(handle)], check=False)
        if chain_made:  # its rule refers to the set: the chain goes first
            for verb in ("flush", "delete"):
                subprocess.run(["nft", verb, "chain", "inet", network.TABLE, PRE_CHAIN],
                               check=False)
        subprocess.run(["nft", "delete", "set", "inet", network.TABLE, SET], check=False)


def _concat(elem) -> list | None:
    """The values of a set element in ``nft -j`` output (plain or with expiry)."""
    if isinstance(elem, dict):
        if "concat" in elem:
            return elem["concat"]
        for value in elem.values():
            found = _concat(value)
            if found:
                return found
    return None


def _workspace_meta(stack, user: str, project: str, timeout: float = 120) -> dict:
    backend = sandbox_for(stack.settings, "hub")
    hub_port = stack.settings.hub.hub_port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in backend.list():
            if ((m.get("user"), m.get("project"), m.get("name")) == (user, project, "workspace")
                    and hub_port in m.get("allowed_ports", []) and m.get("veth")):
                return m
        time.sleep(0.1)
    raise AssertionError(f"no workspace sandbox of {user}/{project} appeared")


def test_a_fresh_workspace_phones_nobody(workspace_hub, ldap_passwords, browser_page):
    stack, page = workspace_hub, browser_page
    sign_in_page(page, stack.url, "bob", ldap_passwords["bob"])
    page.goto(f"{stack.url}/hub/home")
    sandbox_for(stack.settings, "hub").host_address()  # the table, made as a start does
    with recorded_drops() as seen:
        page.locator("#start-cardio-los").click()
        meta = _workspace_meta(stack, "bob", "cardio-los")
        veth, started = meta["veth"], time.monotonic()
        wait_for_lab(page)

        # the page: no announcements plugin, no news, and no prompt
        config = lab_config(page)
        assert config["disabledExtensions"] and \
            "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]
        assert config.get("news", {}).get("disabled") is True, config.get("news")
        base = f"{stack.url}/user/bob/cardio-los/"
        notification = "@jupyterlab/apputils-extension:notification"
        assert lab_setting(page, base, notification, "fetchNews") == "false"
        assert lab_setting(page, base, notification, "checkForUpdates") is False
        assert lab_setting(page, base, "@jupyterlab/translation-extension:plugin",
                           "locale") == "en"  # an English browser
        # (and were the page to ask, the workspace's route allow-list refuses)
        r = page.request.get(f"{base}lab/api/news")
        assert r.status == 403 and "news" in r.json()["reason"], r.text()

        # the first minute of the workspace, JupyterLab open in the browser
        while time.monotonic() - started < WATCH_SECONDS:
            page.wait_for_timeout(2000)
        assert not page.locator(".Toastify__toast").filter(
            has_text=re.compile("news|update", re.I)).count(), \
            page.locator(".Toastify").all_inner_texts()
        assert seen(veth) == [], f"the workspace tried to reach: {seen(veth)}"

        # the recording works: a connection tried from the workspace's namespace
        subprocess.run(["ip", "netns", "exec", network.netns_name(meta["id"]), "python3", "-c",
                        "import socket; s = socket.socket(); s.settimeout(2)\n"
                        "try: s.connect(('192.0.2.1', 80))\nexcept OSError: pass"],
                       check=True, timeout=30)
        attempts = seen(veth)
        assert any(". 192.0.2.1 . tcp" in a for a in attempts), attempts
