"""The ``launcher`` client: the :class:`Sandbox` interface over the launcher's socket.

A service that does not run as root (the airlock, batch, dask-gateway, the
spawner, when ``sandbox.launcher_socket`` is set) starts its sandboxes through
:class:`LauncherSandbox`; its code keeps the same shape. The launcher
(:mod:`ecluse.sandbox.launcher`) decides what the caller may ask for.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from traitlets import Float, Unicode

from ..audit import AuditError, AuditLog
from .base import (
    ProjectPaths,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxSpec,
    UserIdentity,
    backend_class,
)
from .launcher import MAX_REQUEST_BYTES, LaunchRefused, wire_spec


class LauncherSandbox(Sandbox):
    """Sandboxes started by the privileged launcher, as the ``caller`` role."""

    caller = Unicode(help="The role this service has with the launcher (hub, airlock, batch, "
                     "dask).").tag(config=True)
    socket_path = Unicode(help="The launcher's socket (default: sandbox.launcher_socket)."
                          ).tag(config=True)
    connect_timeout = Float(10.0, help="Seconds to reach the launcher.").tag(config=True)
    answer_timeout = Float(300.0, help="Seconds to wait for the launcher's answer (every "
                           "operation but a one-shot run).").tag(config=True)

    @property
    def on_host(self) -> bool:  # type: ignore[override]
        return self._launched.on_host

    @property
    def host_python(self) -> bool:  # type: ignore[override]
        return self._launched.host_python

    @property
    def _launched(self) -> type[Sandbox]:
        """The backend the launcher starts sandboxes with (``sandbox.backend``)."""
        return backend_class(self.settings.sandbox.backend)

    def _path(self) -> str:
        path = self.socket_path or str(self.settings.sandbox.launcher_socket or "")
        if not path:
            raise SandboxError("sandboxes are unavailable",
                               log_message="sandbox.launcher_socket is not set")
        return path

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request to the launcher; its answer, or :class:`SandboxError`."""
        path = self._path()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=MAX_REQUEST_BYTES * 16),
                self.connect_timeout)
        except (OSError, TimeoutError) as e:
            raise SandboxError(
                "sandboxes are unavailable (the sandbox launcher is not running)",
                log_message=f"cannot reach the sandbox launcher at {path}: {e}") from None
        try:
            body = {"op": op, "caller": self.caller or None, **fields}
            writer.write(json.dumps(body).encode() + b"\n")
            await writer.drain()
            # a one-shot run answers when it ends (its own time limit); nothing else waits
            line = await (reader.readline() if op == "run" else
                          asyncio.wait_for(reader.readline(), self.answer_timeout))
        except TimeoutError:
            raise SandboxError("the sandbox launcher did not answer",
                               log_message=f"launcher {path}: no answer to {op} within "
                               f"{self.answer_timeout:.0f}s") from None
        finally:
            writer.close()
        return self._answer(op, path, line)

    @staticmethod
    def _answer(op: str, path: str, line: bytes) -> dict[str, Any]:
        if not line:
            raise SandboxError("the sandbox launcher gave no answer",
                               log_message=f"launcher {path}: connection closed on {op}")
        answer = json.loads(line)
        if not answer.get("ok"):
            error = answer.get("error", "refused")
            cls = LaunchRefused if answer.get("refused") else SandboxError
            raise cls(f"the sandbox launcher refused: {error}" if answer.get("refused")
                      else "the sandbox could not be started",
                      log_message=f"launcher {op}: {error}")
        return answer

    def call(self, op: str, *, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        """:meth:`request` from synchronous code (a service's worker thread), on a plain
        blocking socket: no event loop per call, for many or large answers (a batch
        run's files)."""
        import socket

        path = self._path()
        body = json.dumps({"op": op, "caller": self.caller or None, **fields}).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.connect_timeout)
                sock.connect(path)
                sock.settimeout(timeout)
                sock.sendall(body + b"\n")
                chunks: list[bytes] = []
                size = 0
                while True:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    chunks.append(data)
                    size += len(data)
                    if data.endswith(b"\n"):
                        break
                    if size > MAX_REQUEST_BYTES * 16:
                        raise SandboxError("the sandbox launcher's answer is too large",
                                           log_message=f"launcher {op}: over {size} bytes")
        except OSError as e:
            raise SandboxError(
                "sandboxes are unavailable (the sandbox launcher is not running)",
                log_message=f"cannot reach the sandbox launcher at {path}: {e}") from None
        return self._answer(op, path, b"".join(chunks))

    # ------------------------------------------------------------- the interface

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        return (await self.request("launch", spec=wire_spec(spec), one_shot=one_shot))["state"]

    async def run(self, spec: SandboxSpec, timeout: float | None = None) -> RunResult:
        """One-shot, run by the launcher itself (it stops the sandbox if we go away)."""
        answer = await self.request("run", spec=wire_spec(spec), timeout=timeout)
        return RunResult(**answer["result"])

    async def poll(self, state: dict[str, Any]) -> int | None:
        if state.get("released"):
            return state.get("exit_code", 0)
        answer = await self.request("poll", id=state["id"])
        if answer.get("gone"):
            return state.get("exit_code", 0)
        state.update({k: v for k, v in (answer.get("state") or {}).items()
                      if k in ("exit_code", "oom_killed", "killed")})
        return answer["status"]

    async def terminate(self, state: dict[str, Any], grace: float | None = None) -> None:
        answer = await self.request("terminate", id=state["id"], grace=grace)
        if answer.get("state") and answer["state"].get("killed"):
            state["killed"] = True

    async def release(self, state: dict[str, Any]) -> None:
        answer = await self.request("release", id=state["id"])
        final = answer.get("state") or {}
        if "exit_code" in final:
            state["exit_code"] = final["exit_code"]
        state["released"] = True

    async def read_logs(self, state: dict[str, Any]) -> tuple[str, str]:
        answer = await self.request("read_logs", id=state["id"])
        return answer["stdout"], answer["stderr"]

    def list(self) -> list[dict[str, Any]]:
        """This caller's registered sandboxes (alive or not)."""
        return _sync(self.request("list"))["sandboxes"]

    def host_address(self) -> str:
        return _sync(self.request("host_address"))["address"]

    def prepare_project_dirs(self, project: Any, user: UserIdentity) -> ProjectPaths:
        answer = _sync(self.request(
            "prepare_project_dirs", project=project.slug, project_gid=project.gid,
            user={"name": user.name, "uid": user.uid, "gid": user.gid}))
        return ProjectPaths(shared=Path(answer["shared"]), home=Path(answer["home"]))


def _sync(coro: Any) -> dict[str, Any]:
    """Run ``coro`` from synchronous code (in a thread of its own inside an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()



class LauncherAudit:
    """The audit log of a service that cannot write it itself, through the launcher.

    A service running as its own user (the airlock) has no access to the state
    directory, where the audit database, its JSON Lines copy and the checkpoints
    are. It sends each record to the launcher (op ``audit``), which appends it
    as root, only if the event is one of the caller's own, and stamps the
    caller's role, kernel-verified uid and pid (``via``, ``via_uid``,
    ``via_pid``). :meth:`record` returns when the record is written, and raises
    :class:`~ecluse.audit.AuditError` when it is not (the change is not made).
    """

    def __init__(self, settings: Any, caller: str) -> None:
        self.client = LauncherSandbox(settings=settings, caller=caller)

    def record(self, event: str, *, actor: str | None, project: str | None = None,
               outcome: str = "success", **details: Any) -> int:
        try:
            answer = _sync(self.client.request(
                "audit", event=event, actor=actor, audit_project=project, outcome=outcome,
                details=json.loads(json.dumps(details, default=str))))
        except SandboxError as e:
            raise AuditError(f"the audit record {event} could not be written through the "
                             f"sandbox launcher: {e.log_message or e}") from None
        return int(answer["seq"])


def audit_for(settings: Any, caller: str) -> Any:
    """The audit log a service writes: its own :class:`~ecluse.audit.AuditLog` when it
    runs as root, else (with ``sandbox.launcher_socket`` set) :class:`LauncherAudit`."""
    import os


    if settings.sandbox.launcher_socket and os.geteuid() != 0:
        return LauncherAudit(settings, caller)
    return AuditLog.from_settings(settings)
