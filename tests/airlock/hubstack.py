"""A real JupyterHub with the hub-managed airlock service, for API and browser tests.

:class:`AirlockHub` writes an ``ecluse.yaml``/``projects.yaml`` pair and a
``jupyterhub_config.py`` into a temporary folder, starts ``jupyterhub`` (which
starts configurable-http-proxy and ``ecluse airlock serve``) on free loopback
ports, and stops everything (process group) and deletes the folder.
Users sign in through the hub's login form
(:class:`~doubles.GroupsFromConfigAuthenticator`); API tokens are minted by a
``test-admin`` service through the hub REST API.
"""

from __future__ import annotations

import os
import re
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

from .pgserver import TMP_PREFIX, free_port

HERE = Path(__file__).resolve().parent

USERS: dict[str, list[str]] = {
    "alice": ["cardio-los"],  # researcher
    "bob": ["cardio-los"],  # another researcher of the same project
    "carol": ["output-checkers"],
    "dan": ["output-checkers"],
    "erin": ["output-checkers", "cardio-los"],  # checker who is a project member
    "sam": ["staff"],
    "eve": [],  # signed-in user in no project
}


def password(user: str) -> str:
    return f"pw-{user}-Secret1"


PROJECTS = {
    "projects": {
        "cardio-los": {"title": "Cardiac LOS", "ldap_group": "proj-cardio-los"},
        "air-quality": {
            "title": "Air quality", "ldap_group": "proj-air-quality",
            "members_may_review": True,
        },
    }
}

ECLUSE_YAML = {
    "state_dir": "state",
    "projects_file": "projects.yaml",
    "ldap": {
        "uri": "ldap://127.0.0.1:1",
        "security": "none",
        "base_dn": "dc=test",
        "bind_dn": "cn=svc,dc=test",
        "user_search_base": "ou=people,dc=test",
        "group_search_base": "ou=groups,dc=test",
    },
}

HUB_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
from ecluse.config import load_settings
from ecluse.airlock import airlock_roles, airlock_service_spec
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
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = "doubles.GroupsFromConfigAuthenticator"
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = True
c.GroupsFromConfigAuthenticator.passwords = {passwords!r}
c.GroupsFromConfigAuthenticator.user_groups = {groups!r}
spec = airlock_service_spec(settings)
spec["url"] = "http://127.0.0.1:{airlock_port}"
c.JupyterHub.services = [spec, {{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=airlock"]}},
    *airlock_roles(),
    {{"name": "test-admin", "scopes": ["admin:users", "tokens", "list:users"],
      "services": ["test-admin"]}},
]
'''


class AirlockHub:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "hub-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.airlock_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.airlock_url = f"{self.url}/services/airlock"
        self.admin_token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "hub.log"
        self.state_dir = self.root / "state"

    def write_config(self) -> Path:
        (self.root / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
        cfg = self.root / "ecluse.yaml"
        cfg.write_text(yaml.safe_dump(ECLUSE_YAML))
        hub_cfg = self.root / "jupyterhub_config.py"
        hub_cfg.write_text(
            HUB_CONFIG.format(
                tests=str(HERE), config=str(cfg), port=self.port, hub_port=free_port(),
                proxy_api_port=free_port(), proxy_token=secrets.token_hex(16),
                root=str(self.root), cookie_secret=secrets.token_hex(32),
                passwords={u: password(u) for u in USERS}, groups=USERS,
                airlock_port=self.airlock_port, admin_token=self.admin_token,
            )
        )
        return hub_cfg

    def start(self, timeout: float = 60) -> None:
        hub_cfg = self.write_config()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JUPYTERHUB_API_TOKEN", None)
        bindir = Path(sys.executable).parent
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(bindir / "jupyterhub"), "-f", str(hub_cfg)],
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited: {self.log_tail()}")
            try:
                r = requests.get(f"{self.airlock_url}/api/v1/me", timeout=2)
                if r.status_code == 401:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"hub/airlock did not come up in {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:  # the proxy and the airlock service, if the hub left any behind
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _kill_matching(str(self.root))
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ clients

    def login(self, user: str) -> requests.Session:
        """A browser-like session signed in through the hub login form."""
        s = requests.Session()
        r = s.get(f"{self.url}/hub/login", timeout=10)
        m = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
        r = s.post(
            f"{self.url}/hub/login",
            data={"username": user, "password": password(user), "_xsrf": m.group(1) if m else ""},
            allow_redirects=False, timeout=10,
        )
        if r.status_code != 302:
            raise RuntimeError(f"login of {user} failed: {r.status_code}")
        return s

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        """An API token of ``user`` (signs the user in first so their groups exist)."""
        self.login(user)
        r = requests.post(
            f"{self.url}/hub/api/users/{user}/tokens",
            headers={"Authorization": f"token {self.admin_token}"},
            json={"note": "airlock test", "expires_in": 3600,
                  "scopes": scopes or ["access:services!service=airlock",
                                       "read:users:groups!user"]},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["token"]

    def api(self, user: str, **kw) -> ApiClient:
        return ApiClient(f"{self.airlock_url}/api/v1", self.token(user, **kw))


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"

    def __getattr__(self, method: str):
        if method not in ("get", "post", "delete", "put"):
            raise AttributeError(method)

        def call(path: str, **kw):
            kw.setdefault("timeout", 30)
            return getattr(self.s, method)(self.base + path, **kw)

        return call


def _kill_matching(text: str) -> None:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if text in args and pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
