"""The session-end check finds what the tests left running, even what is nobody's child.

A hub starts its proxy and services in sessions of their own; once the hub is
gone they are re-parented to init, and only their environment (the service
mark, the hub's state folder) says which test session they belong to.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil

from ecluse.hubservice.instances import MARK
from tests.support import leftovers


def _orphan(env: dict[str, str]) -> int:
    """A ``sleep`` in a session of its own whose parent has exited (as a service of a
    dead hub): not a descendant of this process any more. Returns its pid."""
    out = subprocess.run(
        ["setsid", "sh", "-c", "sleep 120 >/dev/null 2>&1 & echo $!"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=10)
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while psutil.Process(pid).ppid() == os.getpid() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def test_an_orphan_marked_with_a_session_folder_is_found_and_killed(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    other = tmp_path / "other"
    mine = _orphan({MARK: str(ours / "state")})
    theirs = _orphan({MARK: str(other / "state")})
    try:
        assert not any(p.pid == os.getpid() for p in psutil.Process(mine).parents())
        found = [p.pid for p in leftovers.leftover_processes([str(ours.resolve())],
                                                          descendants=False)]
        assert mine in found
        assert theirs not in found, "another session's process is not ours to kill"
        leftovers.kill([psutil.Process(mine)])
        assert not psutil.pid_exists(mine) or \
            psutil.Process(mine).status() == psutil.STATUS_ZOMBIE
        assert leftovers.settle([str(ours.resolve())], wait=0, descendants=False) == []
    finally:
        for pid in (mine, theirs):
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
