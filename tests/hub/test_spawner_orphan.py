"""A hub killed while a workspace starts leaves no sandbox running unknown to any hub.

JupyterHub saves a spawner's state only after ``start()`` returns. A hub killed in
between (the chaos test found it) left the sandbox running, the project's data
mounted, with no hub record: the next hub said the server "appears to have stopped
while the Hub was down" and forgot it. The spawner now finds such a sandbox by the
backend's labels (user, project, ``workspace``) when the next hub polls the server,
and before each launch, and removes it. Real local sandboxes (bubblewrap, network
namespaces, cgroups); the hub's kill is :class:`HubKilledAfterLaunch`.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub

from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.hub.spawner import EcluseSpawner
from ecluse.sandbox.cgroups import Cgroups
from ecluse.sandbox.local import teardown_host_network
from ecluse.sandbox.network import DUMMY_IFACE
from tests.support.doubles import SignedInUser
from tests.support.sandboxes import TrackingLocalSandbox

pytestmark = pytest.mark.root


class HubKilled(Exception):
    """The hub process is gone: nothing after this point of start() happens."""


class HubKilledAfterLaunch(EcluseSpawner):
    """A hub killed once ``backend.start`` returned, before JupyterHub saved the state."""

    async def _wait_listening(self, state: dict) -> None:
        raise HubKilled(state["id"])


@pytest.fixture
async def hub_side(make_config, monkeypatch):
    """Settings and a real local backend; every sandbox of the test users removed after."""
    if os.geteuid() != 0:
        pytest.fail("the orphan tests need root (bubblewrap, network namespaces, cgroups)")
    settings = load_settings(make_config(**{"hub.spawner": "ecluse", "sandbox.stop_grace": 1}))
    monkeypatch.setattr(EcluseSpawner, "_audit_log", None)  # this test's audit log
    backend = TrackingLocalSandbox(settings=settings)
    had_network = os.path.exists(f"/sys/class/net/{DUMMY_IFACE}")
    yield settings, backend
    for meta in backend.list():
        if meta.get("user") in USERS and meta.get("project") == "cardio-los":
            await backend.stop(meta, grace=0)
    if not had_network:
        teardown_host_network()


USERS = ("orphaned", "keeper")


def spawner(settings: Any, backend: Any, user: str,
            cls: type[EcluseSpawner] = EcluseSpawner) -> EcluseSpawner:
    s = cls(user=SignedInUser(user, ["cardio-los"]), hub=Hub(),
            orm_spawner=orm.Spawner(name="cardio-los"),
            settings=settings, verify_membership_in_directory="never",
            workspace_cmd=["/bin/sh", "-c", "exec sleep 600", "sh"])
    s._backend = backend
    return s


async def launched_then_killed(settings: Any, backend: Any, user: str) -> dict:
    """Start a workspace on a hub killed right after the launch: the sandbox's state,
    which no hub saved."""
    doomed = spawner(settings, backend, user, HubKilledAfterLaunch)
    with pytest.raises(HubKilled):
        await doomed.start()
    state = dict(doomed.sandbox_state)
    assert await backend.poll(state) is None, await backend.read_logs(state)  # running
    return state


def running(backend: Any, user: str) -> set[str]:
    return {m["id"] for m in backend.list()
            if m.get("user") == user and m.get("alive")}


async def test_the_next_hub_removes_a_workspace_its_killed_predecessor_launched(hub_side):
    settings, backend = hub_side
    orphan = await launched_then_killed(settings, backend, "orphaned")
    # another member's workspace of the same project, whose state the hub did save
    kept = await launched_then_killed(settings, backend, "keeper")
    keeper = spawner(settings, backend, "keeper")
    keeper.load_state({"sandbox": kept, "project": "cardio-los"})

    # the next hub: a server record without state, polled at its start
    nxt = spawner(settings, backend, "orphaned")
    nxt.load_state({})
    assert await nxt.poll() == 0  # "appears to have stopped while the Hub was down"
    assert running(backend, "orphaned") == set()
    assert await backend.poll(orphan) is not None
    assert not Cgroups.from_state(orphan["id"], orphan["cgroup"]).exists()
    (record,) = AuditLog.from_settings(settings).records(event="workspace.orphan_removed")
    assert record.actor is None and record.project == "cardio-los"
    assert record.details == {"owner": "orphaned", "sandbox": orphan["id"], "found": "poll",
                              "was_running": True}

    # the sandbox a hub record owns runs on, and its server answers to its spawner
    assert await keeper.poll() is None
    assert running(backend, "keeper") == {kept["id"]}


async def test_a_start_removes_the_orphan_before_it_launches(hub_side):
    settings, backend = hub_side
    orphan = await launched_then_killed(settings, backend, "orphaned")
    kept = await launched_then_killed(settings, backend, "keeper")

    # no poll (e.g. the server record was gone too): the user starts the workspace again
    again = spawner(settings, backend, "orphaned", HubKilledAfterLaunch)
    with pytest.raises(HubKilled):
        await again.start()
    assert running(backend, "orphaned") == {again.sandbox_state["id"]}
    assert await backend.poll(orphan) is not None
    (record,) = AuditLog.from_settings(settings).records(event="workspace.orphan_removed")
    assert (record.details["sandbox"], record.details["found"]) == (orphan["id"], "start")
    assert running(backend, "keeper") == {kept["id"]}
