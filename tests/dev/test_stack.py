"""The embedded stack: it stops everything its hub started, however the hub ended,
and its supervised components (:meth:`ecluse.dev.stack.Stack.supervised`).

The hub starts configurable-http-proxy and its services in sessions of their
own: when the hub dies (killed, crashed while starting) they are nobody's
children and outlive it, holding their ports. :meth:`Stack.stop` stops them
(its proxy by pid file, its services by their mark), as the next start would.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from ecluse.config import load_settings
from ecluse.dev.stack import HUB_RESTART_WAIT, Stack, StackError
from ecluse.dev.testing import write_config
from ecluse.hubservice import instances


def _proxy_pid(state_dir: Path, timeout: float = 120) -> int:
    pid_file = state_dir / "proxy.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError("the hub did not start its proxy")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class HubKilledOnceItsProxyRuns(Stack):
    """A hub that dies while starting, after it started its proxy (a crash, an
    out-of-memory kill): the stack sees it exit while it waits for it."""

    proxy: int = 0

    def wait_ready(self, timeout: float) -> None:
        self.proxy = _proxy_pid(self.state_dir)
        assert self.hub is not None
        os.kill(self.hub.pid, signal.SIGKILL)
        self.hub.wait(30)
        super().wait_ready(timeout)


def test_a_hub_dying_while_starting_leaves_no_proxy(tmp_path: Path, slapd) -> None:
    path = write_config(tmp_path, slapd)
    with open(tmp_path / "hub.log", "wb") as log:
        stack = HubKilledOnceItsProxyRuns(load_settings(path), hub_log=log)
        with pytest.raises(StackError, match="JupyterHub exited"):
            stack.start()  # stops what it started
    assert stack.proxy and not _alive(stack.proxy), "the proxy outlived its hub's failed start"
    assert instances.find(stack.state_dir) == []


def test_a_killed_hub_leaves_no_proxy_or_service_after_stop(tmp_path: Path, slapd) -> None:
    path = write_config(tmp_path, slapd)
    with open(tmp_path / "hub.log", "wb") as log:
        stack = Stack(load_settings(path), hub_log=log)
        stack.start()
        try:
            proxy = _proxy_pid(stack.state_dir)
            deadline = time.monotonic() + 60
            while not (services := instances.find(stack.state_dir)) and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
            assert services, "the hub started no service (airlock, reconciler)"
            assert stack.hub is not None
            os.kill(stack.hub.pid, signal.SIGKILL)  # as a crash: no cleanup of its own
            stack.hub.wait(30)
        finally:
            stack.stop()
    left = [s.describe() for s in services if _alive(s.pid)]
    assert not _alive(proxy), "the proxy outlived its killed hub"
    assert not left, f"services outlived their killed hub: {left}"


class HubStartRecorder(Stack):
    """A stack whose hub start records how long it would wait for the hub, and starts
    nothing."""

    def start_hub(self, timeout: float = 60) -> None:
        self.waits.append(timeout)


def test_a_restarted_hub_is_waited_for_longer_than_a_workspace(make_config) -> None:
    """A restarted hub starts its route filter, proxy and services again: on a loaded
    host it answered after 106 s, which sandbox.start_timeout (120 s) barely covered;
    the supervisor would kill a hub slower than that and start it again, in a loop."""
    settings = load_settings(make_config())
    stack = HubStartRecorder(settings)
    stack.waits = []
    (hub,) = [c for c in stack.supervised() if c.name == "hub"]
    hub.start()
    assert stack.waits == [HUB_RESTART_WAIT]
    assert HUB_RESTART_WAIT >= 2 * settings.sandbox.start_timeout
