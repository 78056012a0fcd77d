"""The stack ``ecluse up`` builds, with the batch service, for REST and CLI tests.

:class:`UpStack` is :class:`ecluse.dev.stack.Stack` — the class ``ecluse up``
runs — on the repository's own ``config/ecluse.yaml`` and
``config/projects.yaml`` (what ``make up`` starts), changed only where two
stacks must not collide on one host: the state folder, free loopback ports,
no dask-gateway (not used here), a short stop grace and a wider TOTP window
(its users sign in many times a minute; each signs in with the second factor
the stack enrolled from ``demo-users.json``). So the hub's
configuration is the real one (:mod:`ecluse.hub.hubconfig`): the embedded slapd
with the demo directory, the LDAP authenticator, ``EcluseSpawner``, the
airlock and batch services wired by :func:`ecluse.hub.hubconfig.configure`, the
service password passed in the environment (``ldap.bind_password_env``), not
in a file. No harness of ours wires a service.

The demo directory has no staff member who is also a project member; the
tests add one (``sam``: ``ecluse-staff`` and ``proj-cardio-los``) to the
stack's own slapd. Stopped (hub, proxy, services, slapd, host network when
unused) and deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import yaml

from ecluse.config import load_settings
from ecluse.dev.demo import read_demo_users
from ecluse.dev.ldapserver import free_port
from ecluse.dev.stack import Stack, StackError
from ecluse.dev.testing import TEST_TOTP_WINDOW, HubClient

from .conftest import ROOTS

REPO = Path(__file__).resolve().parents[2]
TMP_PREFIX = "ecluse-test-batch-"
SAM_PASSWORD = "pw-sam-Secret1"


def up_config(directory: Path) -> Path:
    """``config/ecluse.yaml`` + ``config/projects.yaml`` with this stack's folder and ports."""
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
                      proxy_api_port=free_port())
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


class UpStack(Stack):
    """``ecluse up``'s stack in a temporary folder (see the module docstring)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        ROOTS.append(str(self.root))
        self.config = up_config(self.root)
        self._log = open(self.root / "hub.log", "wb")  # noqa: SIM115
        super().__init__(load_settings(self.config), hub_log=self._log)
        self.batch_url = f"{self.url}/services/batch/"
        self.passwords: dict[str, str] = {}
        self.totp: dict[str, str] = {}

    def start_hub(self, timeout: float = 180) -> None:
        """As ``ecluse up`` (which waits ``sandbox.start_timeout``): a shared 2-core host."""
        try:
            super().start_hub(timeout)
        except StackError as e:
            raise StackError(f"{e}\n{self.log_tail()}") from None

    def start(self) -> None:
        super().start()
        self.wait_service()
        users = read_demo_users(self.demo_users_file)  # {"alice": {"password", "totp"}}
        self.passwords = {name: u["password"] for name, u in users.items()}
        self.totp = {name: u["totp"] for name, u in users.items()}
        assert self.slapd is not None
        self.slapd.add_user("sam", SAM_PASSWORD, 20010, cn="Sam Staff")
        self.slapd.add_member("ecluse-staff", "sam")
        self.slapd.add_member("proj-cardio-los", "sam")
        self.passwords["sam"] = SAM_PASSWORD

    def stop(self) -> None:
        from ecluse.sandbox.local import teardown_host_network

        try:
            super().stop()
        finally:
            from ecluse.statevolume import release_state_volume

            teardown_host_network()
            # before its folder is removed below; a connection the test process still
            # holds (an engine not yet collected) only delays the detach (umount -l)
            release_state_volume(self.settings)
            db = self.settings.state_dir / "db"
            if os.path.ismount(db):
                subprocess.run(["umount", "-l", str(db)], check=False)
            self._log.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def wait_service(self, timeout: float = 60) -> None:
        """Until the hub-managed batch service answers through the proxy (401: no token)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.batch_url + "api/v1/me", timeout=2).status_code == 401:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the batch service did not come up: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.root / "hub.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        """An API token of ``user``, signed in through the hub's login form (LDAP)."""
        client = HubClient(self.url)
        r = client.login(user, self.passwords[user], totp=self.totp.get(user))
        assert r.status_code == 302, f"login of {user}: {r.status_code}"
        if scopes is None:
            return client.new_token(user)
        r = client.session.post(
            f"{self.url}/hub/api/users/{user}/tokens",
            json={"note": "batch test", "expires_in": 600, "scopes": scopes},
            headers={"X-XSRFToken": client.session.cookies.get("_xsrf") or ""}, timeout=30)
        r.raise_for_status()
        return r.json()["token"]
