"""Helpers shared by the test suite and the benchmarks (no test framework imports).

* :func:`write_config` — an ``ecluse.yaml`` + ``projects.yaml`` pair for a
  given slapd, with free loopback ports and short LDAP timeouts;
* :class:`HubClient` — a browser-like hub client: HTML login form, cookies,
  API tokens, REST calls;
* :class:`Authenticators` — the users' authenticator apps: the TOTP secret of
  each user on each hub, learnt at enrolment (or given: the demo users'), and
  the next code. :meth:`HubClient.login` and :func:`sign_in_page` (a browser)
  sign in with both factors and enrol a user at their first sign-in, as a
  person would;
* :func:`run_in_terminal` and :func:`run_in_kernel` — a shell command in a
  workspace's terminal, code in a new kernel of a workspace (through the proxy).
"""

from __future__ import annotations

import contextlib
import html
import re
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from ..hub.mfa import STEP, code_at, counter_at
from ..hub.roles import project_scope
from .ldapserver import EmbeddedSlapd, free_port


def write_config(
    directory: Path, slapd: EmbeddedSlapd, *, overrides: dict | None = None
) -> Path:
    """An ecluse.yaml/projects.yaml pair for tests (free ports, short timeouts)."""
    directory.mkdir(parents=True, exist_ok=True)
    data_root = directory / "data"
    projects = {
        "projects": {
            "cardio-los": {
                "title": "Cardiac LOS",
                "ldap_group": "proj-cardio-los",
                "datasets": [{"name": "stays", "path": str(data_root / "cardio-los")}],
                "quota": {"cpu": 1, "memory": "1G", "disk": "1G", "dask_workers": 1},
                "disclosure": {"threshold": 11},
            },
            "air-quality": {
                "title": "Air quality",
                "ldap_group": "proj-air-quality",
                "datasets": [{"name": "admissions", "path": str(data_root / "air-quality")}],
            },
        }
    }
    config = {
        "state_dir": str(directory / "state"),
        "projects_file": "projects.yaml",
        "hub": {
            "ip": "127.0.0.1",
            "port": free_port(),
            "public_url": "http://127.0.0.1",
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
            "route_filter_port": free_port(),
            "auth_refresh_age": 300,
            "spawner": "simple",
        },
        "ldap": {
            "embedded": False,
            "uri": slapd.uri,
            "security": "none",
            "base_dn": slapd.base_dn,
            "bind_dn": slapd.service_dn,
            "bind_password_env": None,
            "bind_password_file": str(directory / "ldap-service-password"),
            "user_search_base": f"ou=people,{slapd.base_dn}",
            "group_search_base": f"ou=groups,{slapd.base_dn}",
            "connect_timeout": 1,
            "receive_timeout": 1,
        },
        "sandbox": {"idle_timeout": 0},
        # users sign in many times a minute: codes of the next steps are accepted
        # (tests/hub/test_mfa.py checks the default window of 1)
        "mfa": {"valid_window": TEST_TOTP_WINDOW},
        # a gateway per test hub is not needed (tests/dask start their own)
        "dask": {"gateway": False, "proxy_port": free_port()},
        "airlock": {"port": free_port()},
        "batch": {"port": free_port()},
    }
    for key, value in (overrides or {}).items():
        target = config
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[last] = value
    for slug, project in projects["projects"].items():
        for ds in project["datasets"]:
            path = Path(ds["path"])
            path.mkdir(parents=True, exist_ok=True)
            (path / f"{ds['name']}.csv").write_text(f"patient_id,value\n{slug}-1,42\n")
    pw = directory / "ldap-service-password"
    pw.write_text(slapd.service_password)
    pw.chmod(0o600)
    (directory / "projects.yaml").write_text(yaml.safe_dump(projects))
    path = directory / "ecluse.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def project_token_scopes(project: str) -> list[str]:
    """A token as a script of ``project`` would ask for it: the user's own servers and
    the airlock, acting for that one project (not ``tokens``: it must not mint others)."""
    return ["servers!user", "access:servers!user", "read:users!user", "users:activity!user",
            "access:services!service=airlock", "read:users:groups!user",
            project_scope(project)]


#: steps either side accepted by the hubs of :func:`write_config`
TEST_TOTP_WINDOW = 10


class Authenticators:
    """The users' authenticator apps, per hub: secret, recovery codes, next code.

    A code is never accepted twice by a hub, so signing in twice within 30 s
    takes the code of the next step (accepted within the hub's
    ``mfa.valid_window``); past that, :meth:`code` waits for the clock.
    """

    #: (hub url, user) -> base32 secret; user -> recovery codes last shown
    secrets: dict[tuple[str, str], str] = {}
    recovery_codes: dict[tuple[str, str], list[str]] = {}
    _last: dict[str, int] = {}
    _lock = threading.Lock()

    @classmethod
    def secret(cls, base_url: str, username: str) -> str | None:
        return cls.secrets.get((base_url.rstrip("/"), username))

    @classmethod
    def learn(cls, base_url: str, username: str, secret: str,
              recovery_codes: list[str] | None = None) -> None:
        cls.secrets[(base_url.rstrip("/"), username)] = secret
        if recovery_codes is not None:
            cls.recovery_codes[(base_url.rstrip("/"), username)] = recovery_codes

    @classmethod
    def code(cls, secret: str, window: int = TEST_TOTP_WINDOW) -> str:
        """The code of the first step not used yet (a hub refuses a used one)."""
        with cls._lock:  # two threads never take the same step
            step = max(counter_at(time.time()), cls._last.get(secret, -1) + 1)
            cls._last[secret] = step
        while step > counter_at(time.time()) + window:
            time.sleep(min(STEP, (step - window) * STEP - time.time() + 0.05))
        return code_at(secret, step)


def enrolment_form(page_html: str) -> dict[str, Any] | None:
    """The secret, recovery codes and ticket of an enrolment page (None: not one)."""
    ticket = re.search(r'name="ticket" value="([^"]+)"', page_html)
    secret = re.search(r'<code id="mfa-secret">([A-Z2-7]+)</code>', page_html)
    if not ticket or not secret:
        return None
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", page_html)
    return {"ticket": html.unescape(ticket.group(1)), "secret": secret.group(1),
            "recovery_codes": codes}


class HubClient:
    """A browser-like client of the hub: HTML login form, cookies, tokens."""

    def __init__(self, base_url: str, totp_window: int = TEST_TOTP_WINDOW):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.totp_window = totp_window

    def login(self, username: str, password: str, *, otp: str | None = None,
              totp: str | None = None, enrol: bool = True) -> requests.Response:
        """Sign in through the login form with both factors, as a person does.

        The code is ``otp`` if given, else the next code of ``totp`` (a secret)
        or of the secret this user enrolled on this hub. A user with none is
        shown the enrolment page: with ``enrol`` the client reads the secret
        there (as an app scans the QR code) and confirms with its first code.
        """
        if totp:
            Authenticators.learn(self.base_url, username, totp)
        secret = Authenticators.secret(self.base_url, username)
        # the form first: a hub that does not answer costs no step of the second factor
        page = self.session.get(f"{self.base_url}/hub/login", timeout=30)
        m = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        # nor does the proxy's error page while the hub restarts: a code taken for a form
        # never posted would push every later sign-in of this user a step into the future
        assert m, f"login form has no _xsrf field (HTTP {page.status_code})"
        if otp is None:
            otp = Authenticators.code(secret, self.totp_window) if secret else ""
        r = self.session.post(
            f"{self.base_url}/hub/login",
            data={"_xsrf": m.group(1), "username": username, "password": password,
                  "otp": otp},
            allow_redirects=False,
            timeout=60,
        )
        form = enrolment_form(r.text) if r.status_code == 200 else None
        if form is None or not enrol:
            return r
        Authenticators.learn(self.base_url, username, form["secret"], form["recovery_codes"])
        return self.confirm_enrolment(form["ticket"],
                                      Authenticators.code(form["secret"], self.totp_window))

    def confirm_enrolment(self, ticket: str, otp: str) -> requests.Response:
        return self.session.post(
            f"{self.base_url}/hub/mfa/enrol",
            data={"_xsrf": self.session.cookies.get("_xsrf") or "", "ticket": ticket,
                  "otp": otp},
            allow_redirects=False, timeout=60,
        )

    def new_token(self, username: str, scopes: list[str] | None = None) -> str:
        """A token of the signed-in user (``scopes``: None for the hub's default,
        which acts for no project in the services; see :func:`project_token_scopes`)."""
        xsrf = self.session.cookies.get("_xsrf")
        body: dict = {"note": "test", "expires_in": 600}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.session.post(
            f"{self.base_url}/hub/api/users/{username}/tokens",
            json=body,
            headers={"X-XSRFToken": xsrf or ""},
            timeout=30,
        )
        r.raise_for_status()
        return r.json()["token"]

    def api(self, method: str, path: str, token: str, **kw) -> requests.Response:
        return requests.request(
            method,
            f"{self.base_url}/hub/api{path}",
            headers={"Authorization": f"token {token}"},
            timeout=30,
            **kw,
        )




def sign_in_page(page: Any, base_url: str, username: str, password: str,
                 totp: str | None = None) -> None:
    """Sign in with a Playwright page: type the name, password and code; at a first
    sign-in, read the key on the enrolment page and type the app's first code."""
    base_url = base_url.rstrip("/")
    if totp:
        Authenticators.learn(base_url, username, totp)
    secret = Authenticators.secret(base_url, username)
    page.goto(f"{base_url}/hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    if secret:
        page.fill("input[name=otp]", Authenticators.code(secret))
    page.click("#login_submit")
    page.wait_for_load_state()
    if secret is None and page.locator("#mfa-secret").count():
        secret = page.inner_text("#mfa-secret").strip()
        codes = [c.strip() for c in page.locator("#mfa-recovery-codes code").all_inner_texts()]
        Authenticators.learn(base_url, username, secret, codes)
        page.fill("#ecluse-mfa-enrol input[name=otp]", Authenticators.code(secret))
        page.click("#mfa_submit")
    page.wait_for_url(re.compile(r".*/(hub|user)/(?!login|mfa).*"))


async def run_in_terminal(server_url: str, token: str, command: str,
                          timeout: float = 60, marker: str = "__ECLUSE_DONE__") -> str:
    """Run a shell command in a workspace through Jupyter's terminal websocket.

    This is what a researcher typing in a JupyterLab terminal does. Returns
    the terminal output up to the end marker (or what arrived before the
    timeout / the connection closed).
    """
    import asyncio
    import json as _json

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{server_url}api/terminals", headers=headers, timeout=30)
    r.raise_for_status()
    name = r.json()["name"]
    ws_url = server_url.replace("http://", "ws://") + f"terminals/websocket/{name}"
    conn = await websocket_connect(HTTPRequest(ws_url, headers=headers))
    out: list[str] = []
    try:
        conn.write_message(_json.dumps(["stdin", f"{command}; echo {marker}$?\r"]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                msg = await asyncio.wait_for(conn.read_message(), deadline - loop.time())
            except TimeoutError:
                break
            if msg is None:
                break
            kind, *rest = _json.loads(msg)
            if kind == "stdout":
                out.append(rest[0])
                # the echoed command line shows "<marker>$?"; the result shows digits
                if re.search(re.escape(marker) + r"\d+", "".join(out)):
                    break
    finally:
        conn.close()
        requests.delete(f"{server_url}api/terminals/{name}", headers=headers, timeout=10)
    return "".join(out)


class KernelError(RuntimeError):
    """The code raised in the kernel (its ``ename: evalue``), or the kernel did not answer."""


async def run_in_kernel(server_url: str, token: str, code: str, timeout: float = 60,
                        kernel_name: str = "python3") -> str:
    """Run ``code`` in a new kernel of a workspace, as a notebook cell does: the kernel
    is started (``api/kernels``), the code sent as an ``execute_request`` on the
    kernel's websocket, its ``stream`` output gathered until the kernel is idle
    again, and the kernel shut down. Returns the output; :class:`KernelError` if the
    code raised or the kernel did not finish within ``timeout``."""
    import asyncio
    import json as _json
    import uuid
    from datetime import UTC, datetime

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{server_url}api/kernels", json={"name": kernel_name},
                      headers=headers, timeout=timeout)
    r.raise_for_status()
    kernel = r.json()["id"]
    conn = None
    try:
        ws_url = server_url.replace("http://", "ws://") + f"api/kernels/{kernel}/channels"
        conn = await asyncio.wait_for(
            websocket_connect(HTTPRequest(ws_url, headers=headers)), timeout)
        msg_id = uuid.uuid4().hex
        conn.write_message(_json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "",
                       "session": uuid.uuid4().hex, "version": "5.3",
                       "date": datetime.now(UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False,
                        "stop_on_error": True}}))
        out: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                raw = await asyncio.wait_for(conn.read_message(), deadline - loop.time())
            except TimeoutError:
                raise KernelError(f"no answer from the kernel within {timeout:.0f} s") from None
            if raw is None:
                raise KernelError("the kernel's websocket closed before the code finished")
            msg = _json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg.get("content", {})
            if kind == "stream":
                out.append(content.get("text", ""))
            elif kind == "error":
                raise KernelError(f"{content.get('ename')}: {content.get('evalue')}")
            elif kind == "status" and content.get("execution_state") == "idle":
                return "".join(out)
    finally:
        if conn is not None:
            conn.close()
        with contextlib.suppress(requests.RequestException):  # a workspace gone meanwhile
            requests.delete(f"{server_url}api/kernels/{kernel}", headers=headers, timeout=30)
