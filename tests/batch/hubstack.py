"""A real JupyterHub with the hub-managed batch service, for REST and CLI tests.

:class:`BatchHub` writes a ``jupyterhub_config.py`` next to an Écluse config
made for the session ``slapd`` (run identities and project gids come from
LDAP), starts ``jupyterhub`` (which starts configurable-http-proxy and
``ecluse batch serve`` through :func:`ecluse.batch.batch_service_spec`) on free
loopback ports, and stops everything (process group) and deletes the folder.
Users sign in with :class:`GroupsFromConfigAuthenticator` (hub groups from
config, as the LDAP authenticator sets them); tokens are minted by a
``test-admin`` service.
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

from ecluse.ldapserver import free_port
from ecluse.testing import write_config

HERE = Path(__file__).resolve().parent
TMP_PREFIX = "ecluse-test-batch-"

USERS: dict[str, list[str]] = {
    "sam": ["staff", "cardio-los"],  # staff and a member of the project: may export
    "erin": ["staff"],  # staff, member of no project
    "alice": ["cardio-los"],  # researcher, not staff
}

HUB_CONFIG = '''
import sys
sys.path.insert(0, {here!r})
from ecluse.config import load_settings
from ecluse.batch import batch_roles, batch_service_spec
from ecluse.hubconfig import proxy_command

c = get_config()  # noqa: F821
settings = load_settings({config!r})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.command = proxy_command()
c.ConfigurableHTTPProxy.pid_file = {root!r} + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + {root!r} + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret = bytes.fromhex({cookie_secret!r})
c.JupyterHub.pid_file = {root!r} + "/jupyterhub.pid"
c.JupyterHub.authenticator_class = "doubles.GroupsFromConfigAuthenticator"
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = True
c.GroupsFromConfigAuthenticator.passwords = {passwords!r}
c.GroupsFromConfigAuthenticator.user_groups = {groups!r}
spec = batch_service_spec(settings)
spec["url"] = "http://127.0.0.1:{batch_port}"
c.JupyterHub.services = [spec, {{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self"]}},
    *batch_roles(),
    {{"name": "test-admin", "scopes": ["admin:users", "tokens", "list:users"],
      "services": ["test-admin"]}},
]
'''


def password(user: str) -> str:
    return f"pw-{user}-Secret1"


class BatchHub:
    def __init__(self, slapd) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.batch_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.batch_url = f"{self.url}/services/batch/"
        self.admin_token = secrets.token_hex(16)
        self.config = write_config(self.root / "ecluse", slapd,
                                   overrides={"sandbox.stop_grace": 1})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "hub.log"

    def start(self, timeout: float = 90) -> None:
        hub_cfg = self.root / "jupyterhub_config.py"
        hub_cfg.write_text(HUB_CONFIG.format(
            here=str(HERE), config=str(self.config), port=self.port, hub_port=free_port(),
            proxy_api_port=free_port(), proxy_token=secrets.token_hex(16), root=str(self.root),
            cookie_secret=secrets.token_hex(32), passwords={u: password(u) for u in USERS},
            groups=USERS, batch_port=self.batch_port, admin_token=self.admin_token,
        ))
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
                if requests.get(f"{self.batch_url}api/v1/me", timeout=2).status_code == 401:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"hub/batch did not come up in {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:  # the proxy and the batch service, if the hub left any behind
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        """An API token of ``user`` (signed in first, so their hub groups exist)."""
        s = requests.Session()
        page = s.get(f"{self.url}/hub/login", timeout=10).text
        xsrf = page.split('name="_xsrf" value="', 1)[1].split('"', 1)[0]
        r = s.post(f"{self.url}/hub/login", allow_redirects=False, timeout=30,
                   data={"username": user, "password": password(user), "_xsrf": xsrf})
        assert r.status_code == 302, f"login of {user}: {r.status_code}"
        body: dict = {"note": "batch test", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = requests.post(f"{self.url}/hub/api/users/{user}/tokens", json=body, timeout=10,
                          headers={"Authorization": f"token {self.admin_token}"})
        r.raise_for_status()
        return r.json()["token"]
