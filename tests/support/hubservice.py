"""A real JupyterHub configured as a deployment is, for a hub-managed Écluse service.

:class:`ServiceHub` writes a ``jupyterhub_config.py`` that calls
:func:`ecluse.hub.hubconfig.configure` — the hub configuration of every
deployment: services (their command, URL and environment), roles, secrets,
proxy — on the service's Écluse config, with free loopback ports written
into it. The test changes two things only, and no service's wiring: users
sign in through the hub's login form with
:class:`doubles.GroupsFromConfigAuthenticator` (hub groups from config, as
the LDAP authenticator sets them from the directory), and a ``test-admin``
service mints API tokens through the hub REST API. It starts ``jupyterhub``
(which starts configurable-http-proxy and the services), waits for the
service to answer, and stops everything (process group) and deletes the
folder.

A subclass says which service it tests (``service``), who signs in
(``users``) and writes the Écluse config (:meth:`ServiceHub.ecluse_config`).
(The batch service is tested in the stack ``ecluse up`` builds instead:
``tests/batch/hubstack.py``.)
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from ecluse.dev.ldapserver import free_port

HERE = Path(__file__).resolve().parent

HUB_CONFIG = '''
import sys
sys.path.insert(0, {here!r})
from ecluse.config import load_settings
from ecluse.hub.hubconfig import configure

c = get_config()  # noqa: F821
configure(c, load_settings({config!r}))  # what every deployment's hub runs
# the test's own: who signs in (hub groups from config), who mints tokens
c.JupyterHub.authenticator_class = "doubles.GroupsFromConfigAuthenticator"
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = True
c.GroupsFromConfigAuthenticator.passwords = {passwords!r}
c.GroupsFromConfigAuthenticator.user_groups = {groups!r}
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {admin_token!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "test-admin", "scopes": ["admin:users", "tokens", "list:users"],
      "services": ["test-admin"]}})
'''


def password(user: str) -> str:
    return f"pw-{user}-Secret1"


class ServiceHub:
    """JupyterHub + proxy + one hub-managed service, in a temporary folder."""

    #: the service: ``ecluse.<service>`` has ``<service>_service_spec`` and ``<service>_roles``
    service: str
    #: username -> hub groups (each signs in with :func:`password`)
    users: dict[str, list[str]]
    #: scopes of :meth:`token` when none are given (None: the hub's default)
    token_scopes: list[str] | None = None
    tmp_prefix = "ecluse-test-hub-"
    start_timeout: float = 60
    stop_timeout: float = 20

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=self.tmp_prefix))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.service_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_url = f"{self.url}/services/{self.service}"
        self.admin_token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "hub.log"

    def ecluse_config(self) -> Path:
        """Write the service's ``ecluse.yaml`` (and what it names); return its path."""
        raise NotImplementedError

    def write_hub_config(self) -> Path:
        config = self.ecluse_config()
        data = yaml.safe_load(config.read_text())
        # this hub's loopback ports; a plain process spawner and no other service (the
        # workspaces, dask-gateway and the culler are not what these tests are about)
        data.setdefault("hub", {}).update(
            ip="127.0.0.1", port=self.port, public_url=self.url, hub_port=free_port(),
            proxy_api_port=free_port(), spawner="simple")
        data.setdefault(self.service, {}).update(ip="127.0.0.1", port=self.service_port)
        data.setdefault("sandbox", {})["idle_timeout"] = 0
        data.setdefault("dask", {})["gateway"] = False
        config.write_text(yaml.safe_dump(data, allow_unicode=True))
        hub_cfg = self.root / "jupyterhub_config.py"
        hub_cfg.write_text(HUB_CONFIG.format(
            here=str(HERE), config=str(config),
            passwords={u: password(u) for u in self.users}, groups=self.users,
            admin_token=self.admin_token,
        ))
        return hub_cfg

    def start(self, timeout: float | None = None) -> None:
        timeout = timeout or self.start_timeout
        hub_cfg = self.write_hub_config()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JUPYTERHUB_API_TOKEN", None)
        bindir = Path(sys.executable).parent
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(bindir / "jupyterhub"), "-f", str(hub_cfg)], cwd=self.root, env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited: {self.log_tail()}")
            try:
                if requests.get(f"{self.service_url}/api/v1/me", timeout=2).status_code == 401:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(
            f"hub/{self.service} did not come up in {timeout}s: {self.log_tail()}"
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:  # the proxy and the service, if the hub left any behind
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.kill_leftovers()
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def kill_leftovers(self) -> None:
        """After the hub's process group is gone: anything else to stop."""

    # ------------------------------------------------------------ clients

    def login(self, user: str) -> requests.Session:
        """A browser-like session signed in through the hub login form (the one
        helper of every test, :meth:`ecluse.dev.testing.HubClient.login`; the
        double authenticator here asks no second factor)."""
        from ecluse.dev.testing import HubClient

        c = HubClient(self.url)
        r = c.login(user, password(user))
        if r.status_code != 302:
            raise RuntimeError(f"login of {user} failed: {r.status_code}")
        return c.session

    def token(self, user: str, scopes: list[str] | None = None,
              project: str | None = None) -> str:
        """An API token of ``user`` (signed in first, so their hub groups exist).

        Without ``scopes``: :attr:`token_scopes` plus the scope of ``project``, or
        of the user's only project (as a workspace's token has it)."""
        from ecluse.hub.roles import ROLE_GROUPS, project_scope

        self.login(user)
        body: dict = {"note": f"{self.service} test", "expires_in": 3600}
        if scopes is None and self.token_scopes is not None:
            projects = [g for g in self.users.get(user, []) if g not in ROLE_GROUPS]
            if project is None and len(projects) == 1:
                project = projects[0]
            scopes = [*self.token_scopes, *([project_scope(project)] if project else [])]
        if scopes is not None:
            body["scopes"] = scopes
        r = requests.post(
            f"{self.url}/hub/api/users/{user}/tokens", json=body, timeout=10,
            headers={"Authorization": f"token {self.admin_token}"},
        )
        r.raise_for_status()
        return r.json()["token"]
