"""One start of a workspace asks each thing once: the project folders are prepared once
(by the sandbox as it starts), Dask is sized once, the sandbox host address is asked
once, and the environment comes from one place (``ecluse.hub.workspace``)."""

from __future__ import annotations

import importlib
import socket
import sys
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.objects import Hub

import ecluse.hub.spawner
from ecluse.config import load_settings
from ecluse.hub.spawner import EcluseSpawner
from ecluse.sandbox.testing import PlainProcessSandbox
from tests.support.doubles import SignedInUser

#: the module (``ecluse.dask.sizing`` the attribute is the function it re-exports)
SIZING = importlib.import_module("ecluse.dask.sizing")

#: the workspace server's stand-in: listens on --port until stopped
LISTEN = (
    "import socket, sys, time\n"
    "port = int([a for a in sys.argv if a.startswith('--port=')][0].split('=')[1])\n"
    "s = socket.socket(); s.bind(('127.0.0.1', port)); s.listen()\n"
    "time.sleep(600)\n"
)


class CountingSandbox(PlainProcessSandbox):
    """Plain processes (no isolation), counting what a start asks of the backend."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.prepared = 0
        self.reached = 0
        self.specs: list[Any] = []

    def prepare_project_dirs(self, project, user):
        self.prepared += 1
        return super().prepare_project_dirs(project, user)

    def host_address(self) -> str:
        self.reached += 1
        return "127.0.0.1"

    async def launch(self, spec, *, one_shot=False):
        self.specs.append(spec)
        return await super().launch(spec, one_shot=one_shot)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_start_prepares_sizes_and_asks_the_host_address_once(
        make_config, tmp_path, monkeypatch):
    settings = load_settings(make_config(**{"hub.spawner": "ecluse"}))
    sized = []
    real = SIZING.sizing

    def counting_sizing(project):
        sized.append(project.slug)
        return real(project)

    # every way to size Dask: the spawner's and the sizing module's own default
    monkeypatch.setattr(SIZING, "sizing", counting_sizing)
    monkeypatch.setattr(ecluse.hub.spawner, "sizing", counting_sizing)
    backend = CountingSandbox(settings=settings, unsafe_no_isolation=True,
                              root=str(tmp_path / "plain"))
    spawner = EcluseSpawner(user=SignedInUser("alice", ["cardio-los"]), hub=Hub(),
                            orm_spawner=orm.Spawner(name="cardio-los"), settings=settings,
                            verify_membership_in_directory="never",
                            workspace_port=_free_port(),
                            workspace_cmd=[sys.executable, "-c", LISTEN])
    spawner._backend = backend
    try:
        await spawner.start()
        assert backend.prepared == 1  # by the sandbox as it starts, not again by the hub
        assert sized == ["cardio-los"]  # environment and command from one sizing
        assert backend.reached == 1
        (spec,) = backend.specs
        env = spec.env
        assert env["ECLUSE_PROJECT"] == "cardio-los"
        assert env["JUPYTER_DATA_DIR"] == "/etc/jupyter/data"
        assert env["ECLUSE_AIRLOCK_URL"] == (
            f"http://127.0.0.1:{settings.airlock.port}/services/airlock/")
        assert env["DASK_TEMPORARY_DIRECTORY"] == "/home/alice/.cache/dask-spill"
        memory = real(settings.projects["cardio-los"]).total_worker_memory
        assert spec.command[:3] == ["/usr/bin/prlimit", f"--rss={memory}", "--"]
    finally:
        await spawner.stop(now=True)
        backend.remove_root()
    assert not Path(tmp_path / "plain").exists()
