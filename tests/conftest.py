"""Shared fixtures: real components started on loopback, stopped afterwards.

Fixtures for whole components (each starts the real thing and stops it):

* ``slapd`` (session) — Debian's OpenLDAP on a free loopback port with the
  demo directory (alice, bob, carol, dan, erin + a user in no project,
  ``nobody``); ``ldap_passwords`` maps user → password.
* ``make_config`` — writes an ``ecluse.yaml`` + ``projects.yaml`` pair for
  that slapd into a temp dir, with free ports; returns the path.
* ``settings`` — the loaded :class:`ecluse.config.Settings` of such a config.
* ``hub_stack`` (module) — JupyterHub + configurable-http-proxy + the hub's
  services: the one harness (:class:`tests.support.hubstack.HubStack`, what
  ``ecluse up`` runs) against ``slapd``, with a short refresh age.
* ``hub_client`` — log in through the hub's HTML form, get tokens, call the
  REST API.

Every fixture removes what it created (processes, temp dirs) pass or fail;
``pytest_sessionfinish`` fails the run when a process the tests started is
still alive (:mod:`tests.support.leftovers`: descendants, and processes naming
a folder of the session on their command line or in their environment, as a
dead hub's proxy and services do), and kills it.
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
from tests.support import leftovers
from tests.support.hubstack import password, running_hub

REPO = Path(__file__).resolve().parent.parent
TMP_PREFIX = "ecluse-test-"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--postgres", action="store_true", default=False,
                     help="also run the database suites on PostgreSQL (as ECLUSE_TEST_POSTGRES=1)")
    parser.addoption("--no-docker-full", action="store_true", default=False,
                     help="skip the long Docker suites: the hub image, the whole stack on "
                     "Docker, the workspace host role with its engine (as "
                     "ECLUSE_TEST_DOCKER_FULL=0; they run by default)")


def pytest_configure(config: pytest.Config) -> None:
    """The Docker engines the tests start (the docker suites' own, ``ecluse up --sandbox
    docker``'s) keep their data root in memory (``ecluse.sandbox.engine.Dockerd``): a
    loaded image's tens of thousands of files are removed with the engine in a second,
    not in minutes of a busy disk's unlinks."""
    if os.geteuid() == 0:
        os.environ.setdefault("ECLUSE_DOCKER_TMPFS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``docker_full`` tests (the hub image, the whole stack on a Docker engine, the
    workspace host role) run by default: every docker suite fits the CI budget, image
    builds included (issue 17 item 4; docs/sandbox.md). ``ECLUSE_TEST_DOCKER_FULL=0`` or
    ``--no-docker-full`` opts out (a quick run on a development machine)."""
    docker_full = not config.getoption("--no-docker-full") and \
        os.environ.get("ECLUSE_TEST_DOCKER_FULL") != "0"
    docker_off = pytest.mark.skip(reason="long Docker suite: opted out "
                                  "(ECLUSE_TEST_DOCKER_FULL=0 or --no-docker-full)")
    for item in items:
        if item.get_closest_marker("docker_full") and not docker_full:
            item.add_marker(docker_off)


@pytest.fixture(scope="session")
def session_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    os.chmod(d, 0o755)
    leftovers.register(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd(session_tmp: Path) -> Iterator[EmbeddedSlapd]:
    server = EmbeddedSlapd(session_tmp / "ldap")
    server.start()
    server.passwords = {}
    for u in DEMO_USERS:
        pw = password(u.uid)
        server.add_user(u.uid, pw, u.uid_number, cn=u.cn)
        server.passwords[u.uid] = pw
    server.add_user("nobody", password("nobody"), 20099, cn="No Project")
    server.passwords["nobody"] = password("nobody")
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
    directory = tmp_path_factory.mktemp("hub")
    path = write_config(directory, slapd, overrides={"hub.auth_refresh_age": 1})
    with running_hub(path) as stack:
        yield stack


@pytest.fixture
def hub_client(hub_stack) -> HubClient:
    return HubClient(hub_stack.url)


def pytest_sessionfinish(session, exitstatus):
    """Every process the tests started must be gone: what is left (the hub's proxy or
    services outliving it, a daemon) is listed, killed, and fails the run."""
    basetemp = getattr(session.config, "_tmp_path_factory", None)
    if basetemp is not None:
        try:
            leftovers.register(basetemp.getbasetemp())
        except Exception:
            pass  # no test asked for a temporary folder
    left = leftovers.settle()
    if left:
        print("\nLEFTOVER PROCESSES after the test session (killed now):\n"
              + "\n".join(leftovers.describe(p) for p in left))
        leftovers.kill(left)
        session.exitstatus = 1
