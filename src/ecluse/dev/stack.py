"""The embedded stack that ``ecluse up`` runs: slapd (optional), JupyterHub, proxy.

:class:`Stack` is also what the integration tests and benchmarks start, so
the demo a newcomer sees and the system the tests exercise are the same.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from ..audit import AuditLog
from ..config import Settings
from ..hub.hubconfig import ENV_CLEANUP, ENV_CONFIG, ENV_PORT, ENV_STATE_DIR
from ..hubservice import instances
from ..secrets import ensure_secrets
from .ldapserver import EmbeddedSlapd
from .supervisor import Supervised, die_with_parent

log = logging.getLogger(__name__)

HUB_CONFIG = Path(__file__).parent.parent / "hub" / "jupyterhub_config.py"


class StackError(RuntimeError):
    pass


class Stack:
    """Start and stop everything a deployment needs on this machine."""

    def __init__(
        self,
        settings: Settings,
        *,
        cleanup_servers: bool = True,
        hub_log: IO | None = None,
        extra_env: dict[str, str] | None = None,
        seed_demo: bool | None = None,
        die_with_parent: bool = False,
    ):
        self.settings = settings
        self.cleanup_servers = cleanup_servers
        self.hub_log = hub_log
        self.extra_env = extra_env or {}
        self.seed_demo = settings.ldap.embedded if seed_demo is None else seed_demo
        self.slapd: EmbeddedSlapd | None = None
        self.hub: subprocess.Popen | None = None
        self.demo_passwords: dict[str, str] | None = None
        self.launcher = None
        #: the hub and slapd get SIGTERM when this process dies (``ecluse up``)
        self.die_with_parent = die_with_parent

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def url(self) -> str:
        return f"http://{self.settings.hub.ip}:{self.settings.hub.port}"

    @property
    def demo_users_file(self) -> Path:
        return self.state_dir / "demo-users.json"

    # ------------------------------------------------------------ steps

    def prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        ensure_secrets(self.state_dir)
        from ..statevolume import ensure_state_volume

        ensure_state_volume(self.settings)
        # create the audit tables once, up front (and let go of the files: the volume
        # is unmounted when the stack stops)
        AuditLog.from_settings(self.settings).engine.dispose()
        from ..sandbox.quota import state_disk_warning

        warning = state_disk_warning(self.settings)
        if warning:
            log.warning("%s", warning)

    def start_ldap(self) -> None:
        ldap = self.settings.ldap
        if not ldap.embedded:
            return
        self.slapd = EmbeddedSlapd(
            self.state_dir / "ldap",
            base_dn=ldap.base_dn,
            host=ldap.host,
            port=ldap.port or ldap.uri_port,
            service_dn=ldap.bind_dn,
        )
        if self.die_with_parent:
            self.slapd.preexec_fn = die_with_parent()
        self.slapd.start()
        if ldap.bind_password_env:
            os.environ[ldap.bind_password_env] = self.slapd.service_password
        if self.seed_demo:
            self.demo_passwords = self.slapd.seed_demo(self.demo_users_file)
            from .demo import seed_demo_data

            seed_demo_data(self.settings)

    def hub_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                ENV_CONFIG: str(self.settings.config_file),
                ENV_STATE_DIR: str(self.state_dir),
                ENV_PORT: str(self.settings.hub.port),
                ENV_CLEANUP: "1" if self.cleanup_servers else "0",
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            }
        )
        if self.slapd and self.settings.ldap.bind_password_env:
            env[self.settings.ldap.bind_password_env] = self.slapd.service_password
        env.update(self.extra_env)
        return env

    def start_hub(self, timeout: float = 60) -> None:
        # ecluse-hub: jupyterhub minus a 3 s optional import (ecluse.hub), as a
        # module so that an environment installed before the script works too
        cmd = [sys.executable, "-m", "ecluse.hub", "-f", str(HUB_CONFIG)]
        self.stop_stale_hub()
        self.hub = subprocess.Popen(
            cmd,
            cwd=self.state_dir,
            env=self.hub_env(),
            stdout=self.hub_log,
            stderr=subprocess.STDOUT if self.hub_log else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent() if self.die_with_parent else None,
        )
        self.wait_ready(timeout)

    @property
    def hub_pid_file(self) -> Path:
        return self.state_dir / "jupyterhub.pid"  # hubconfig: c.JupyterHub.pid_file

    def stop_stale_hub(self) -> int | None:
        """A hub of this state folder still running (its ``ecluse up`` was killed, or it
        did not stop): kill it, before a new one starts. SIGKILL, as a crash would: its
        workspaces are re-adopted by the new hub, which stops the proxy and services
        the old one leaves (pid files, ecluse.hubservice.instances)."""
        try:
            pid = int(self.hub_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self.hub is not None and self.hub.pid == pid:
            return None
        env = instances.environ(pid)
        if env.get(ENV_STATE_DIR) is None or \
                Path(env[ENV_STATE_DIR]).resolve() != self.state_dir.resolve():
            return None
        log.warning("stopping the hub left running at pid %s on %s", pid, self.state_dir)
        instances.stop([instances.Instance(pid, "hub", instances.cmdline(pid))], grace=None)
        instances.record_removed(AuditLog.from_settings(self.settings), "ecluse-up",
                                 "hub process", [f"pid {pid}"])
        return pid

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.url}/hub/api/"
        while time.monotonic() < deadline:
            if self.hub and self.hub.poll() is not None:
                raise StackError(f"JupyterHub exited with status {self.hub.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise StackError(f"JupyterHub did not answer on {url} within {timeout:.0f}s")

    def cleanup_sandboxes(self) -> None:
        """Remove what dead sandboxes left (a crash, a killed hub) before the hub starts.

        Running sandboxes are left alone: the hub re-adopts them.
        """
        if self.settings.hub.spawner != "ecluse" or self.settings.sandbox.backend != "local":
            return
        import asyncio

        from ..sandbox import get_backend

        removed = asyncio.run(get_backend(self.settings).cleanup_orphans())
        if removed:
            log.warning("removed %d dead sandbox(es): %s", len(removed), ", ".join(removed))

    def start_launcher(self) -> None:
        """The sandbox launcher (root), when the settings name its socket: the services
        then start their sandboxes through it, each within its policy."""
        if not self.settings.sandbox.launcher_socket:
            return
        if os.geteuid() != 0:
            log.warning("sandbox.launcher_socket is set but this is not root: no sandbox "
                        "launcher started (start `ecluse sandbox launcher` as root)")
            return
        from ..sandbox.launcher import LauncherProcess

        self.launcher = LauncherProcess(
            self.settings, log_file=self.hub_log,
            preexec_fn=die_with_parent() if self.die_with_parent else None)
        self.launcher.start()

    def start(self) -> None:
        try:
            self.prepare()
            self.start_ldap()
            self.cleanup_sandboxes()
            self.start_launcher()
            self.start_hub()
        except BaseException:
            self.stop()
            raise

    def stop_hub(self, timeout: float = 60) -> None:
        if not self.hub:
            return
        if self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("JupyterHub did not stop in %ss: killing its process group", timeout)
                os.killpg(self.hub.pid, signal.SIGKILL)
                self.hub.wait(10)
        self.hub = None

    def supervised(self) -> list[Supervised]:
        """The components ``ecluse up`` restarts when they die, in start order."""
        components = []
        if self.slapd is not None:
            slapd = self.slapd
            components.append(Supervised(
                "slapd", start=slapd.start, stop=slapd.stop,
                exit_status=lambda: slapd.proc.poll() if slapd.proc else -1))
        if self.launcher is not None:
            launcher = self.launcher
            components.append(Supervised(
                "sandbox-launcher", start=launcher.start, stop=launcher.stop,
                exit_status=lambda: launcher.proc.poll() if launcher.proc else -1))
        components.append(Supervised(
            "hub", start=lambda: self.start_hub(self.settings.sandbox.start_timeout),
            stop=self.stop_hub,
            exit_status=lambda: self.hub.poll() if self.hub else -1))
        return components

    def stop(self) -> None:
        try:
            self.stop_hub()
        finally:
            if self.launcher:
                self.launcher.stop()
                self.launcher = None
            if self.slapd:
                self.slapd.stop()
                self.slapd = None
            from ..statevolume import release_state_volume

            release_state_volume(self.settings)  # one in use by another stack stays

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
