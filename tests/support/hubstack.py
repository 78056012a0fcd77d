"""The one hub harness of the test suites: the stack ``ecluse up`` runs.

:class:`HubStack` is :class:`ecluse.dev.stack.Stack` — the class ``ecluse up``
runs — on a suite's ``ecluse.yaml``, so every suite's hub is configured as a
deployment's (:func:`ecluse.hub.hubconfig.configure`: services, their
commands, URLs, environment, roles, secrets, proxy). No suite wires a service
of its own. The options are what the suites differ in:

* the configuration: :func:`ecluse.dev.testing.write_config` for the session's
  ``slapd``, :func:`up_config` for the repository's own ``config/ecluse.yaml``
  (what ``make up`` starts: embedded slapd with the demo directory, whose
  users sign in with the second factor the stack enrolled), or any other;
* ``wait_for``: the hub-managed services to wait for after the hub answers;
* ``users`` (``{name: [hub groups]}``): users sign in through the hub's login
  form with :class:`doubles.GroupsFromConfigAuthenticator` instead of the
  directory (``tests/support/jupyterhub_config.py``: the deployment's
  configuration, then that authenticator and a ``test-admin`` service minting
  API tokens);
* the ``Stack`` keywords (``sandbox=``, ``cleanup_servers=``, ...).

:meth:`HubStack.stop` stops everything pass or fail — the hub, its process
group, the proxy, the route filter and the hub-managed services
(:meth:`Stack.stop_left_by_hub`), slapd, the launcher, the host network when
no sandbox uses it, the state volume — and deletes the folder it was given.
Every folder is registered with :mod:`leftovers`, whose session-end check
finds anything that outlived it. :func:`running_hub` is the fixture form.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from ecluse.config import load_settings
from ecluse.dev.demo import read_demo_users
from ecluse.dev.ldapserver import free_port
from ecluse.dev.stack import Stack, StackError
from ecluse.dev.testing import TEST_TOTP_WINDOW, HubClient
from ecluse.hub.roles import ROLE_GROUPS, project_scope
from ecluse.sandbox.local import teardown_host_network
from ecluse.statevolume import release_state_volume

from . import leftovers

REPO = Path(__file__).resolve().parents[2]
#: the hub configuration with ``users=`` (the deployment's, plus who signs in)
USERS_HUB_CONFIG = Path(__file__).resolve().parent / "jupyterhub_config.py"
#: environment variable naming the ``users=`` file the hub configuration reads
USERS_ENV = "ECLUSE_TEST_HUB_USERS"


def password(user: str) -> str:
    """The password of a ``users=`` user (and of the session slapd's demo users)."""
    return f"pw-{user}-Secret1"


def up_config(directory: Path) -> Path:
    """``config/ecluse.yaml`` + ``config/projects.yaml`` (what ``make up`` starts) in
    ``directory``, changed only where two stacks must not collide on one host: the
    state folder, free loopback ports, no dask-gateway, a short stop grace, a wider
    TOTP window (its users sign in many times a minute)."""
    cfg = yaml.safe_load((REPO / "config" / "ecluse.yaml").read_text())
    projects = yaml.safe_load((REPO / "config" / "projects.yaml").read_text())
    state = directory / "state"
    for project in projects["projects"].values():
        for ds in project["datasets"]:
            ds["path"] = ds["path"].replace("../.ecluse", str(state))
    cfg["state_dir"] = str(state)
    cfg["projects_file"] = "projects.yaml"
    port = free_port()
    cfg["hub"].update(port=port, public_url=f"http://127.0.0.1:{port}", hub_port=free_port(),
                      proxy_api_port=free_port(), route_filter_port=free_port())
    cfg["ldap"]["uri"] = f"ldap://127.0.0.1:{free_port()}"
    cfg["sandbox"].update(stop_grace=1, idle_timeout=0)
    cfg["airlock"]["port"] = free_port()
    cfg["batch"]["port"] = free_port()
    cfg["dask"]["gateway"] = False
    cfg["mfa"] = {"valid_window": TEST_TOTP_WINDOW}  # tokens are made many times a minute
    (directory / "projects.yaml").write_text(yaml.safe_dump(projects))
    path = directory / "ecluse.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


class HubStack(Stack):
    """``ecluse up``'s stack on a suite's configuration (see the module docstring)."""

    def __init__(self, config: Path, *, users: dict[str, list[str]] | None = None,
                 token_scopes: list[str] | None = None, wait_for: tuple[str, ...] = (),
                 root: Path | None = None, log_path: Path | None = None,
                 start_timeout: float = 180, **kwargs: Any) -> None:
        #: removed at :meth:`stop` (when given: a folder the harness owns)
        self.root = root
        self.log_path = log_path or config.parent / "hub.log"
        settings = load_settings(config)
        leftovers.register(config.parent, settings.state_dir)
        if root is not None:
            leftovers.register(root)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        super().__init__(settings, hub_log=self._log, **kwargs)
        self.config = config
        self.users = users
        #: scopes of :meth:`token` when none are given (``users=`` hubs)
        self.token_scopes = token_scopes
        self.wait_for = wait_for
        self.start_timeout = start_timeout
        self.admin_token = secrets.token_hex(16) if users is not None else None
        #: user -> password (and TOTP secret: directory users) to sign in with
        self.passwords: dict[str, str] = {u: password(u) for u in users or {}}
        self.totp: dict[str, str] = {}
        if users is not None:
            self.hub_config = USERS_HUB_CONFIG

    def service_url(self, name: str) -> str:
        return f"{self.url}/services/{name}"

    # ------------------------------------------------------------ start, stop

    def hub_env(self) -> dict[str, str]:
        env = super().hub_env()
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("JUPYTERHUB_API_TOKEN", None)
        if self.users is not None:
            path = self.state_dir / "test-hub-users.json"
            path.write_text(json.dumps({
                "passwords": self.passwords, "groups": self.users,
                "admin_token": self.admin_token}))
            path.chmod(0o600)
            env[USERS_ENV] = str(path)
        return env

    def start_hub(self, timeout: float | None = None) -> None:
        """As ``ecluse up`` (which waits ``sandbox.start_timeout``): a shared 2-core host."""
        try:
            super().start_hub(timeout or self.start_timeout)
        except StackError as e:
            raise StackError(f"{e}\n{self.log_tail()}") from None

    def start(self) -> None:
        super().start()
        try:
            for service in self.wait_for:
                self.wait_service(service)
        except BaseException:
            self.stop()
            raise
        if self.demo_users_file.exists():  # {"alice": {"password", "totp"}}
            for name, user in read_demo_users(self.demo_users_file).items():
                self.passwords[name] = user["password"]
                self.totp[name] = user["totp"]

    def wait_service(self, name: str, timeout: float = 90) -> None:
        """Until the hub-managed service answers through the proxy (401: no token)."""
        url = f"{self.service_url(name)}/api/v1/me"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hub is not None and self.hub.poll() is not None:
                break
            try:
                if requests.get(url, timeout=2).status_code == 401:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise StackError(f"the {name} service did not come up: {self.log_tail()}")

    def stop(self) -> None:
        if self._log.closed:
            return  # stopped already (a failed start stops what it started)
        try:
            super().stop()
        finally:
            teardown_host_network()  # when no sandbox of another test uses it
            # before its folder is removed below; a connection the test process still
            # holds (an engine not yet collected) only delays the detach (umount -l)
            release_state_volume(self.settings)
            db = self.settings.state_dir / "db"
            if os.path.ismount(db):
                subprocess.run(["umount", "-l", str(db)], check=False)
            self._log.close()
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------ clients

    def add_directory_user(self, name: str, password: str, uid: int,
                           groups: list[str], cn: str | None = None) -> None:
        """A user of the stack's own slapd (embedded), in ``groups``."""
        assert self.slapd is not None, "the stack runs no slapd of its own"
        self.slapd.add_user(name, password, uid, cn=cn or name)
        for group in groups:
            self.slapd.add_member(group, name)
        self.passwords[name] = password

    def client(self, user: str) -> HubClient:
        """A browser-like client signed in through the hub's login form (with the
        second factor the stack enrolled, for its demo users)."""
        c = HubClient(self.url)
        r = c.login(user, self.passwords[user], totp=self.totp.get(user))
        if r.status_code != 302:
            raise RuntimeError(f"login of {user} failed: {r.status_code}")
        return c

    def login(self, user: str) -> requests.Session:
        return self.client(user).session

    def token(self, user: str, scopes: list[str] | None = None,
              project: str | None = None) -> str:
        """An API token of ``user``, who signs in first (so their hub groups exist).

        Without ``scopes``: :attr:`token_scopes` plus the scope of ``project``, or of
        the user's only project (as a workspace's token has it); without those either,
        the hub's default."""
        client = self.client(user)
        if scopes is None and self.token_scopes is not None:
            groups = (self.users or {}).get(user, [])
            projects = [g for g in groups if g not in ROLE_GROUPS]
            if project is None and len(projects) == 1:
                project = projects[0]
            scopes = [*self.token_scopes, *([project_scope(project)] if project else [])]
        if self.admin_token is None:  # the user's own, as from the Token page
            return client.new_token(user, scopes)
        body: dict[str, Any] = {"note": "test", "expires_in": 3600}  # users= hubs: minted
        if scopes is not None:  # by the test-admin service
            body["scopes"] = scopes
        r = requests.post(f"{self.url}/hub/api/users/{user}/tokens", json=body, timeout=30,
                          headers={"Authorization": f"token {self.admin_token}"})
        r.raise_for_status()
        return r.json()["token"]


@contextmanager
def running_hub(config: Path, **kwargs: Any) -> Iterator[HubStack]:
    """A started :class:`HubStack` on ``config``; stopped on exit, pass or fail."""
    stack = HubStack(config, **kwargs)
    stack.start()  # stops what it started when it fails
    try:
        yield stack
    finally:
        stack.stop()
