"""configurable-http-proxy with the host-side route filter in front of workspaces.

:class:`EcluseProxy` is JupyterHub's ``ConfigurableHTTPProxy`` (same process,
same REST API, same options) plus one change: a route to a user's server is
registered with the route filter (:mod:`ecluse.hub.routefilter`) as its target,
the real server named in a signed first path segment. The hub still sees the
real targets (``get_all_routes`` translates back), so its route checks are
unchanged. The proxy starts, watches and stops the filter with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from jupyterhub.proxy import ConfigurableHTTPProxy
from traitlets import Integer, List, Unicode, default

from .routefilter import ENV_KEY, HEALTH_PATH, derive_key, sign_route

#: route data key holding the real target of a filtered route
TARGET_KEY = "ecluse_target"


class EcluseProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy whose user-server routes go through the route filter."""

    route_filter_ip = Unicode(
        "127.0.0.1", help="Where the route filter listens (loopback: only the proxy uses it)."
    ).tag(config=True)
    route_filter_port = Integer(8002, help="Port of the route filter.").tag(config=True)
    route_filter_command = List(
        Unicode(), help="Command that runs the route filter (its address is appended)."
    ).tag(config=True)
    route_filter_pid_file = Unicode(
        "", help="PID file of the route filter (stopped at the next start if left over)."
    ).tag(config=True)

    @default("route_filter_command")
    def _default_filter_command(self) -> list[str]:
        return [sys.executable, "-m", "ecluse.hub.routefilter"]

    _filter_process: subprocess.Popen | None = None

    @property
    def _key(self) -> bytes:
        return derive_key(self.auth_token)

    @property
    def route_filter_url(self) -> str:
        return f"http://{self.route_filter_ip}:{self.route_filter_port}"

    def filtered_target(self, routespec: str, target: str, data: dict[str, Any]) -> str:
        segment = sign_route(self._key, target=target, routespec=routespec,
                             user=str(data.get("user", "")),
                             server=str(data.get("server_name", "")))
        return f"{self.route_filter_url}/{segment}"

    @staticmethod
    def _is_user_server(data: dict[str, Any] | None) -> bool:
        return bool(data) and "user" in data and "server_name" in data  # type: ignore[operator]

    # ------------------------------------------------------------ routes

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> None:
        if self._is_user_server(data):
            data = {**data, TARGET_KEY: target}
            target = self.filtered_target(routespec, target, data)
        await super().add_route(routespec, target, data)

    def _reformat_routespec(self, routespec: str, chp_data: dict[str, Any]) -> dict[str, Any]:
        route = super()._reformat_routespec(routespec, chp_data)
        real = route["data"].pop(TARGET_KEY, None)
        if real is not None and route["target"] == self.filtered_target(
                routespec, real, route["data"]):
            # a route that goes through the filter, as registered: the hub sees the
            # server's address. Any other target is reported as it is, so that the
            # hub's route check replaces it.
            route["target"] = real
        return route

    # --------------------------------------------------------- processes

    async def start(self) -> None:
        await asyncio.to_thread(self.start_route_filter)
        try:
            await super().start()
        except BaseException:
            self.stop_route_filter()
            raise

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.stop_route_filter()

    async def check_running(self) -> None:
        if self._filter_process is not None and self._filter_process.poll() is not None:
            self.log.error("route filter stopped with exit code %s: restarting it",
                           self._filter_process.returncode)
            await asyncio.to_thread(self.start_route_filter)
        await super().check_running()

    def start_route_filter(self, timeout: float = 60.0) -> None:
        # 60 s: loading the answer judge takes ~5 s of CPU, 15-20 s on a loaded 2-core host
        self._stop_previous_filter()
        env = dict(os.environ)
        env[ENV_KEY] = self._key.hex()
        cmd = [*self.route_filter_command, "--ip", self.route_filter_ip,
               "--port", str(self.route_filter_port), "--parent-pid", str(os.getpid())]
        self.log.info("Starting the route filter @ %s", self.route_filter_url)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        self._filter_process = proc
        if self.route_filter_pid_file:
            with open(self.route_filter_pid_file, "w") as fh:
                fh.write(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the route filter exited with status {proc.returncode} "
                                   "at start (see the hub log)")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(self.route_filter_url + HEALTH_PATH, timeout=1):
                    return
            time.sleep(0.1)
        self.stop_route_filter()
        raise TimeoutError(f"the route filter did not answer on {self.route_filter_url} "
                           f"within {timeout:.0f}s")

    def stop_route_filter(self) -> None:
        proc, self._filter_process = self._filter_process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.route_filter_pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.route_filter_pid_file)

    def _stop_previous_filter(self) -> None:
        """A filter left by a hub that was killed holds the port: stop it."""
        if not self.route_filter_pid_file:
            return
        try:
            with open(self.route_filter_pid_file) as fh:
                pid = int(fh.read().strip())
        except (FileNotFoundError, ValueError):
            return
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"ecluse.hub.routefilter" not in fh.read():
                    return
        except OSError:
            return
        self.log.warning("stopping the route filter left at pid %s", pid)
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            time.sleep(0.5)
            if not os.path.exists(f"/proc/{pid}"):
                return
