"""Batch fixtures: a real slapd, real sandboxes, a real hub with the batch service.

Components (each is the real thing, removed afterwards pass or fail):

* ``batch_config`` — an ``ecluse.yaml``/``projects.yaml`` pair for the session
  ``slapd`` (tests/conftest.py) with two projects (``cardio-los``: alice, bob;
  ``air-quality``: alice), short stop grace.
* ``make_service`` — a :class:`BatchService` on that config with its
  scheduler running in the test's event loop, over a
  :class:`TrackingLocalSandbox` (a real ``LocalSandbox`` recording every
  sandbox it launches); closed at the end of the test.
* ``notebook`` — writes small notebooks (``nb(cells, tag_parameters=...)``).
* ``batch_hub`` (module, in test_web.py) — the stack ``ecluse up`` builds
  (:class:`tests.support.hubstack.HubStack` on the repository's config,
  :func:`~tests.support.hubstack.up_config`: embedded slapd, hub, proxy, the
  hub-managed airlock and batch services, real sandboxes).

The session teardown proves that every sandbox the run launched is gone
(registry entry, network namespace, cgroup) and that no hub or batch service
process is left; each test's config folder (state, project folders) is
deleted. Needs root (namespaces, cgroups, nftables, bubblewrap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecluse.batch.service import BatchService
from ecluse.config import load_settings
from ecluse.dev.testing import write_config
from ecluse.sandbox import network as net
from ecluse.sandbox.cgroups import Cgroups
from ecluse.sandbox.local import LocalSandbox
from ecluse.settings.batch import BatchSettings
from tests.support import leftovers
from tests.support.sandboxes import CREATED, TrackingLocalSandbox

ROOTS: list[str] = []  # folders this run's configs live in (hub stacks, services)


def sandbox_gone(sid: str) -> bool:
    return (not os.path.exists(net.netns_path(sid)) and not Cgroups(sid).exists()
            and not Path(f"/run/ecluse/sandboxes/{sid}").exists())


@pytest.fixture(scope="session", autouse=True)
def _root_and_leaks() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("tests/batch need root (sandboxes: namespaces, cgroups, bubblewrap)")
    yield
    left = [sid for sid in CREATED if not sandbox_gone(sid)]
    if left:
        asyncio.run(LocalSandbox(settings=None).cleanup_orphans(min_age=0))
    assert not left, f"sandboxes left behind by the batch tests: {left}"
    # processes naming a folder of this run, on their command line or in their environment
    # (a hub's services once the hub is gone); other runs on the host have their own
    procs = leftovers.settle([str(Path(r).resolve()) for r in ROOTS], descendants=False)
    described = [leftovers.describe(p) for p in procs]
    leftovers.kill(procs)
    assert not procs, "processes left behind by the batch tests:\n" + "\n".join(described)


@pytest.fixture
def batch_config(tmp_path: Path, slapd) -> Iterator[Path]:
    ROOTS.append(str(tmp_path / "cfg"))
    yield write_config(tmp_path / "cfg", slapd, overrides={"sandbox.stop_grace": 1})
    shutil.rmtree(tmp_path / "cfg", ignore_errors=True)  # root- and user-owned run folders


def nb(*sources: str, parameters: str | None = None) -> dict[str, Any]:
    """A notebook: an optional cell tagged ``parameters``, then code cells."""
    import nbformat

    cells = []
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    book = nbformat.v4.new_notebook(cells=cells)
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    return json.loads(nbformat.writes(book))


@pytest.fixture
async def make_service(batch_config: Path) -> AsyncIterator[Callable[..., BatchService]]:
    made: list[tuple[BatchService, asyncio.Task]] = []

    def make(**conf: Any) -> BatchService:
        settings = load_settings(batch_config)
        service = BatchService.from_settings(
            settings, conf=BatchSettings(poll_interval=0.1, **conf),
            backend=TrackingLocalSandbox(settings=settings),
        )
        made.append((service, asyncio.create_task(service.run_scheduler())))
        return service

    yield make
    for service, task in made:
        await service.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_final(service: BatchService, run_id: str, timeout: float = 90) -> dict[str, Any]:
    staff = service.identity("erin", ["staff"])
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = service.get_run(staff, run_id)
        if run["final"]:
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
        await asyncio.sleep(0.1)
