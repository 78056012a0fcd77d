"""Shared fixtures: real components started on loopback, stopped afterwards.

Fixtures for whole components (each starts the real thing and stops it):

* ``slapd`` (session) — Debian's OpenLDAP on a free loopback port with the
  demo directory (alice, bob, carol, dan, erin + a user in no project,
  ``nobody``); ``ldap_passwords`` maps user → password.
* ``make_config`` — writes an ``ecluse.yaml`` + ``projects.yaml`` pair for
  that slapd into a temp dir, with free ports; returns the path.
* ``settings`` — the loaded :class:`ecluse.config.Settings` of such a config.
* ``hub_stack`` (module) — JupyterHub + configurable-http-proxy started by
  :class:`ecluse.dev.stack.Stack` against ``slapd``, with a short refresh age.
* ``hub_client`` — log in through the hub's HTML form, get tokens, call the
  REST API.

Every fixture removes what it created (processes, temp dirs) pass or fail;
``pytest_sessionfinish`` checks that no slapd or hub process is left over.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.config import load_settings
from ecluse.dev.ldapserver import DEMO_GROUPS, DEMO_USERS, EmbeddedSlapd
from ecluse.dev.testing import HubClient, write_config

REPO = Path(__file__).resolve().parent.parent
TMP_PREFIX = "ecluse-test-"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--postgres", action="store_true", default=False,
                     help="also run the database suites on PostgreSQL (as ECLUSE_TEST_POSTGRES=1)")
    parser.addoption("--docker-full", action="store_true", default=False,
                     help="also run the long Docker suites: the hub image, the whole stack on "
                     "Docker, the workspace host role with its engine (as "
                     "ECLUSE_TEST_DOCKER_FULL=1; `make test-docker-full`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``docker_full`` tests (each adds minutes of image builds or a whole stack on a
    Docker engine) run only when asked: they do not fit the CI budget yet (issue 17)."""
    docker_full = config.getoption("--docker-full") or \
        os.environ.get("ECLUSE_TEST_DOCKER_FULL") == "1"
    docker_off = pytest.mark.skip(reason="long Docker suite: set ECLUSE_TEST_DOCKER_FULL=1 or "
                                  "--docker-full (`make test-docker-full`)")
    for item in items:
        if item.get_closest_marker("docker_full") and not docker_full:
            item.add_marker(docker_off)


@pytest.fixture(scope="session")
def session_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    os.chmod(d, 0o755)
    _SESSION_PATHS.append(str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd(session_tmp: Path) -> Iterator[EmbeddedSlapd]:
    server = EmbeddedSlapd(session_tmp / "ldap")
    server.start()
    server.passwords = {}
    for u in DEMO_USERS:
        pw = f"pw-{u.uid}-Secret1"
        server.add_user(u.uid, pw, u.uid_number, cn=u.cn)
        server.passwords[u.uid] = pw
    server.add_user("nobody", "pw-nobody-Secret1", 20099, cn="No Project")
    server.passwords["nobody"] = "pw-nobody-Secret1"
    for name, (kind, gid) in DEMO_GROUPS.items():
        server.add_group(name, kind, gid, [u.uid for u in DEMO_USERS if name in u.groups])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ldap_passwords(slapd: EmbeddedSlapd) -> dict[str, str]:
    return slapd.passwords


@pytest.fixture
def make_config(tmp_path: Path, slapd: EmbeddedSlapd):
    counter = iter(range(1000))

    def make(**overrides) -> Path:
        return write_config(tmp_path / f"cfg{next(counter)}", slapd, overrides=overrides)

    return make


@pytest.fixture
def settings(make_config):
    return load_settings(make_config())


@pytest.fixture(scope="module")
def hub_stack(tmp_path_factory, slapd):
    from tests.support.stacks import running_stack

    directory = tmp_path_factory.mktemp("hub")
    path = write_config(directory, slapd, overrides={"hub.auth_refresh_age": 1})
    with running_stack(load_settings(path), directory / "hub.log") as stack:
        yield stack


@pytest.fixture
def hub_client(hub_stack) -> HubClient:
    return HubClient(hub_stack.url)


_SESSION_PATHS: list[str] = []


def _leftover_processes(config) -> list[str]:
    """Processes this test session started and left running.

    Descendants of this pytest process, and processes whose command line names
    this session's temp dirs (a daemon that detached from us). Other sessions'
    processes on the same machine are not ours to report.
    """
    import psutil

    me = os.getpid()
    paths = list(_SESSION_PATHS)
    basetemp = getattr(config, "_tmp_path_factory", None)
    if basetemp is not None:
        try:
            paths.append(str(basetemp.getbasetemp()))
        except Exception:
            pass
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] == me:
            continue
        cmd = " ".join(proc.info["cmdline"] or [])
        try:
            ours = any(p.pid == me for p in proc.parents())
        except psutil.Error:
            continue
        if "multiprocessing.resource_tracker" in cmd or "multiprocessing.forkserver" in cmd:
            continue  # the interpreter's own helpers: they exit with pytest itself
        if ours or any(path in cmd for path in paths):
            left.append(f"{proc.info['pid']} {cmd[:160]}")
    return left


def pytest_sessionfinish(session, exitstatus):
    import time

    left = _leftover_processes(session.config)
    if left:  # give exiting processes a moment to be reaped
        time.sleep(2)
        left = _leftover_processes(session.config)
    if left:
        print("\nLEFTOVER PROCESSES after the test session:\n" + "\n".join(left))
        session.exitstatus = 1
