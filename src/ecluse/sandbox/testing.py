"""Reference test doubles of the sandbox base class — never for production.

* :class:`PlainProcessSandbox` runs the command as a plain child process of
  the caller, **without any isolation**, on 127.0.0.1. It implements the
  whole backend contract (state, poll with PID-reuse protection, graceful
  stop, one-shot runs), so spawner and batch tests can run without root.
* :class:`FailingSandbox` fails every start with a :class:`SandboxError`.

Both refuse to be built unless ``unsafe_no_isolation=True`` is passed, so a
configuration typo cannot select them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from traitlets import Bool, Unicode

from .base import ProjectPaths, Sandbox, SandboxError, SandboxSpec, UserIdentity, sandbox_env


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


class PlainProcessSandbox(Sandbox):
    """Runs commands as plain local processes (no isolation at all): tests only."""

    on_host = True
    host_python = True

    unsafe_no_isolation = Bool(False, help="Must be True: this backend isolates nothing.")
    root = Unicode("", help="Folder of the project folders and outputs (a test's temp "
                   "dir, removed by the test; default: a new temp dir the caller removes "
                   "with :meth:`remove_root`).")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if not self.unsafe_no_isolation:
            raise SandboxError("PlainProcessSandbox isolates nothing: pass "
                               "unsafe_no_isolation=True (tests only)")
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._root = Path(self.root or tempfile.mkdtemp(prefix="ecluse-plain-"))

    def remove_root(self) -> None:
        """Delete the folder of project folders and outputs (the test is done with it)."""
        shutil.rmtree(self._root, ignore_errors=True)

    def host_address(self) -> str:
        return "127.0.0.1"

    def prepare_project_dirs(self, project: Any, user: UserIdentity) -> ProjectPaths:
        base = self._root / project.slug
        paths = ProjectPaths(shared=base / "shared", home=base / "home" / user.name)
        paths.shared.mkdir(parents=True, exist_ok=True)
        paths.home.mkdir(parents=True, exist_ok=True)
        return paths

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        paths = self.prepare_project_dirs(spec.project, spec.user)
        sid = f"p{os.urandom(5).hex()}"
        out, err = self._root / f"{sid}.out", self._root / f"{sid}.err"
        env = {**sandbox_env(spec, os.environ.get("PATH", "/usr/bin:/bin")),
               "HOME": str(paths.home)}
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = await asyncio.create_subprocess_exec(
                *spec.command, cwd=paths.home, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=fo, stderr=fe if one_shot else fo, start_new_session=not one_shot)
        self._procs[sid] = proc
        return {"backend": "plain", "id": sid, "ip": "127.0.0.1", "port": spec.port,
                "pid": proc.pid, "pid_start": _start_time(proc.pid), "one_shot": one_shot,
                "out": str(out), "err": str(err)}

    async def poll(self, state: dict[str, Any]) -> int | None:
        proc = self._procs.get(state["id"])
        if proc is not None:
            return proc.returncode
        if "exit_code" in state:
            return state["exit_code"]
        # adopted after a restart: alive only if the PID still is the same process
        if _start_time(state["pid"]) == state["pid_start"] is not None:
            return None
        return 1

    async def wait(self, state: dict[str, Any], timeout: float | None = None) -> int | None:
        proc = self._procs.get(state["id"])
        if proc is None:
            return await super().wait(state, timeout)
        try:
            return await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)
        except TimeoutError:
            return None

    async def terminate(self, state: dict[str, Any], grace: float | None = None) -> None:
        if grace is None:
            grace = self.settings.sandbox.stop_grace if self.settings else 1.0
        if await self.poll(state) is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(state["pid"], sig) if not state["one_shot"] else os.kill(
                    state["pid"], sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if await self.poll(state) is not None:
                    return
                await asyncio.sleep(0.02)

    async def release(self, state: dict[str, Any]) -> None:
        proc = self._procs.pop(state["id"], None)
        if proc is not None and proc.returncode is not None:
            state["exit_code"] = proc.returncode
        for key in ("out", "err"):
            Path(state[key]).unlink(missing_ok=True)
        state["released"] = True

    async def read_logs(self, state: dict[str, Any]) -> tuple[str, str]:
        def read(p: str) -> str:
            try:
                return Path(p).read_bytes()[-self.max_log_bytes:].decode(errors="replace")
            except FileNotFoundError:
                return ""

        if state["one_shot"]:
            return read(state["out"]), read(state["err"])
        return read(state["out"]), ""


class FailingSandbox(PlainProcessSandbox):
    """Every start fails, as a broken host would."""

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        raise SandboxError("the workspace could not be started",
                           log_message="FailingSandbox: launch refused (test double)")
