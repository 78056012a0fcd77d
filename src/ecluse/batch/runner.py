"""The queue runner: start queued runs in order, each in a one-shot project sandbox.

:class:`QueueRunner` is a mixin of :class:`~ecluse.batch.service.BatchService`
(it uses the service's table helpers, backend and audit). A run:

1. its identity is resolved again in the directory (fail closed);
2. ``/project/batch/<run-id>/`` is created (owner: the run identity, group:
   the project; by the sandbox launcher when the service runs as its own
   user), empty: the inputs stay in the run record store (:mod:`.records`),
   mounted read-only at ``/batch-input``;
3. the sandbox runs :data:`~ecluse.batch.driver.DRIVER` (papermill) there,
   with no network and the inputs' sha256 to check; progress is read from
   ``progress.json`` while it runs;
4. cancel and timeout stop the sandbox (SIGTERM, grace, SIGKILL, removed);
5. the executed notebook and the sandbox's own output are kept in the record
   store, the status and the audit event (with the output's sha256) recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from typing import Any

from sqlalchemy import select

from ..sandbox import Mount, SandboxError, SandboxSpec, UserIdentity, sandbox_python_env
from .driver import driver_command
from .errors import BatchError
from .identity import RunIdentity
from .records import parameters_bytes
from .runs import (
    INPUT_MOUNT,
    OUTCOMES,
    OUTPUT_NOTEBOOK,
    PROGRESS,
    RESULT,
    SANDBOX_LOG,
    Status,
    run_dict,
    runs_table,
    utcnow,
)

log = logging.getLogger("ecluse.batch")

#: an error class as staff may see it (its message is project data)
ENAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,199}$")
#: bytes of the sandbox's own output kept in the record store (the driver's errors)
MAX_KEPT = 1024 * 1024


class QueueRunner:
    """Scheduling and execution of runs (mixed into ``BatchService``)."""

    # provided by BatchService
    settings: Any
    conf: Any
    engine: Any
    backend: Any
    records: Any
    folders: Any
    _airlock: Any
    _active: dict[str, asyncio.Task]
    _cancel: dict[str, asyncio.Event]
    _states: dict[str, dict[str, Any]]
    _wake: asyncio.Event | None
    _loop: asyncio.AbstractEventLoop | None
    _closing: bool

    async def run_scheduler(self) -> None:
        """Start queued runs in order while fewer than ``concurrency`` run. Until close."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for sandbox_id in await asyncio.to_thread(self._recover):
            await self._remove_sandbox(sandbox_id)
        while not self._closing:
            await self._start_queued()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()

    async def _remove_sandbox(self, sandbox_id: str) -> None:
        """Stop and remove a sandbox left by a previous process (a local one-shot sandbox
        dies with its parent, but its network and cgroup stay until removed; a container
        runs on in its engine until stopped)."""
        listing = getattr(self.backend, "list", None)
        if listing is None:
            return
        try:
            for meta in await asyncio.to_thread(listing):
                # a registered sandbox of either backend (local: its cgroup; docker: its
                # container), not a registry entry left without its meta data
                # kubernetes: its Job, found by its labels
                if meta.get("id") == sandbox_id and ("cgroup" in meta or "container" in meta
                                                     or meta.get("job")):
                    await self.backend.stop(meta, grace=0)
        except Exception:
            log.exception("could not remove sandbox %s of an interrupted run", sandbox_id)

    def _recover(self) -> list[str]:
        """Runs left ``running`` by a previous process died with it: mark them failed.

        Returns the ids of their sandboxes, to be removed."""
        sandboxes = []
        with self.engine.connect() as c:
            rows = c.execute(select(runs_table).where(
                runs_table.c.status == Status.RUNNING.value)).all()
        for row in rows:
            run = run_dict(row)
            if self._set(run["id"], expect=[Status.RUNNING], status=Status.FAILED.value,
                         finished_at=utcnow(),
                         error="the batch service restarted during the run"):
                self._record("finish", run["submitted_by"], run["project"],
                             outcome="failure", **self._finish_details(self._load(run["id"])))
                if run["sandbox_id"]:
                    sandboxes.append(run["sandbox_id"])
        return sandboxes

    async def _start_queued(self) -> None:
        free = self.conf.concurrency - len(self._active)
        if free <= 0:
            return

        def claim() -> list[dict[str, Any]]:
            with self.engine.connect() as c:
                rows = c.execute(select(runs_table.c.id).where(
                    runs_table.c.status == Status.QUEUED.value
                ).order_by(runs_table.c.seq).limit(free)).all()
            claimed = []
            for (rid,) in rows:
                if self._set(rid, expect=[Status.QUEUED], status=Status.RUNNING.value,
                             started_at=utcnow()):
                    claimed.append(self._load(rid))
            return claimed

        for run in await asyncio.to_thread(claim):
            self._cancel[run["id"]] = asyncio.Event()
            task = asyncio.create_task(self._execute(run), name=f"batch-{run['id']}")
            self._active[run["id"]] = task
            task.add_done_callback(lambda _t, rid=run["id"]: self._done(rid))

    def _done(self, run_id: str) -> None:
        self._active.pop(run_id, None)
        self._cancel.pop(run_id, None)
        self._states.pop(run_id, None)
        if self._wake is not None:
            self._wake.set()

    async def _execute(self, run: dict[str, Any]) -> None:
        rid = run["id"]
        outcome: dict[str, Any] = {"status": Status.FAILED, "error": "internal error"}
        state: dict[str, Any] | None = None
        folder: Any = None
        who: RunIdentity | None = None
        try:
            who = await asyncio.to_thread(self.resolve_identity, run["project"], run["run_as"])
            folder = await asyncio.to_thread(self._prepare_folder, run, who)
            spec = self._spec(run, who)
            if self._cancel[rid].is_set():
                outcome = {"status": Status.CANCELLED, "error": "cancelled before it started"}
                return
            state = await self.backend.launch(spec, one_shot=True)
            self._states[rid] = state
            await asyncio.to_thread(self._set, rid, sandbox_id=state.get("id"))
            await asyncio.to_thread(
                self._record, "start", run["submitted_by"], run["project"], run_id=rid,
                run_as=who.name, uid=who.uid, sandbox=state.get("id"),
            )
            outcome = await self._watch(run, state, folder)
        except BatchError as e:
            outcome = {"status": Status.FAILED, "error": e.message}
            log.warning("run %s: %s", rid, e.log_message)
        except Exception as e:  # the sandbox could not start, the folder is unusable...
            msg = str(e) if isinstance(e, SandboxError) else "internal error"
            outcome = {"status": Status.FAILED, "error": msg}
            log.exception("run %s failed in the service: %s", rid, getattr(e, "log_message", e))
        finally:
            await self._finish(run, state, folder, who, outcome)

    def _prepare_folder(self, run: dict[str, Any], who: RunIdentity) -> Any:
        """The run's new folder (:mod:`.files`: made here as root, or by the launcher)."""
        project = self._project(run["project"], who)
        if not self.records.inputs(run["id"]).is_dir():
            raise BatchError("the run's inputs are missing from the record store",
                             log_message=f"{self.records.inputs(run['id'])} is missing")
        return self.folders.create(project, UserIdentity(who.name, who.uid, who.gid),
                                   who.project_gid, run["id"])

    def _project(self, slug: str, who: RunIdentity) -> Any:
        return self.settings.projects[slug].model_copy(update={"gid": who.project_gid})

    def _spec(self, run: dict[str, Any], who: RunIdentity) -> Any:
        params_sha = hashlib.sha256(parameters_bytes(run["parameters"])).hexdigest()
        return SandboxSpec(
            project=self._project(run["project"], who),
            user=UserIdentity(who.name, who.uid, who.gid),
            command=driver_command(sandbox_python_env(self.settings), self.conf.kernel_name,
                                   run["notebook_sha256"], params_sha),
            extra_mounts=[Mount(self.records.inputs(run["id"]), INPUT_MOUNT, True)],
            env={
                "PYTHONNOUSERSITE": "1",
                "PYTHONUNBUFFERED": "1",
                "MPLBACKEND": "Agg",
                "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
                "ECLUSE_BATCH_RUN": run["id"],
            },
            allowed_ports=[],  # a batch run talks to nothing
            workdir=f"/project/batch/{run['id']}",
            name="batch",
        )

    async def _watch(self, run: dict[str, Any], state: dict[str, Any],
                     folder: Any) -> dict[str, Any]:
        rid = run["id"]
        deadline = time.monotonic() + float(run["timeout"])
        cancel = self._cancel[rid]
        seen = (0, 0)
        stopped: Status | None = None
        while True:
            status = await self.backend.poll(state)
            progress = await asyncio.to_thread(self._progress, folder)
            if progress and progress != seen:
                seen = progress
                await asyncio.to_thread(self._set, rid, cells_done=progress[0],
                                        cells_total=progress[1])
            if status is not None:
                break
            if cancel.is_set() or time.monotonic() >= deadline:
                stopped = Status.CANCELLED if cancel.is_set() else Status.TIMED_OUT
                await self.backend.terminate(state, self.settings.sandbox.stop_grace)
                status = await self.backend.poll(state)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), self.conf.poll_interval)
        progress = await asyncio.to_thread(self._progress, folder)
        if progress:
            await asyncio.to_thread(self._set, rid, cells_done=progress[0],
                                    cells_total=progress[1])
        out, err = await self.backend.read_logs(state)
        outcome: dict[str, Any] = {"exit_code": status, "log": out + err}
        if stopped is Status.CANCELLED and self._closing:
            return {**outcome, "status": Status.FAILED,
                    "error": "the batch service stopped during the run"}
        if stopped is Status.CANCELLED:
            return {**outcome, "status": stopped, "error": "cancelled"}
        if stopped is Status.TIMED_OUT:
            return {**outcome, "status": stopped,
                    "error": f"timed out after {float(run['timeout']):g} s"}
        result = await asyncio.to_thread(self._result, folder)
        if result.get("status") == "refused" and status == 5:
            return {**outcome, "status": Status.FAILED,
                    "error": f"refused: {result['input']} differs from the submitted one "
                    "(sha256)"}
        if status == 0 and result.get("status") == "succeeded":
            return {**outcome, "status": Status.SUCCEEDED, "error": None}
        if state.get("oom_killed"):
            return {**outcome, "status": Status.FAILED,
                    "error": "killed: the project's memory limit was exceeded"}
        if result.get("status") == "failed":
            # the error class only: its message is the notebook's output (project data,
            # in result.json and log.txt of the run folder)
            return {**outcome, "status": Status.FAILED, "failed_cell": result.get("cell_index"),
                    "error": result.get("ename") or "error"}
        return {**outcome, "status": Status.FAILED,
                "error": f"papermill exited with status {status}"}

    def _progress(self, folder: Any) -> tuple[int, int] | None:
        data = self._json_file(folder, PROGRESS)
        try:
            done, total = int(data["done"]), int(data["total"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (0 <= done <= total <= 1_000_000):
            return None
        return done, total

    def _result(self, folder: Any) -> dict[str, Any]:
        data = self._json_file(folder, RESULT)
        if not isinstance(data, dict):
            return {}
        cell = data.get("cell_index")
        ename = data.get("ename")
        return {
            "status": data.get("status")
            if data.get("status") in ("succeeded", "failed", "refused") else None,
            "cell_index": cell if isinstance(cell, int) and not isinstance(cell, bool)
            else None,
            "ename": ename if isinstance(ename, str) and ENAME_RE.match(ename) else None,
            "input": data.get("input") if data.get("input") in ("input.ipynb", "parameters.json")
            else "an input",
        }

    @staticmethod
    def _json_file(folder: Any, name: str) -> Any:
        """Written by the sandbox: untrusted, bounded, never through a link."""
        try:
            raw = folder.read(name, 64 * 1024)
            return json.loads(raw) if raw else None
        except (BatchError, OSError, ValueError):
            return None

    async def _finish(self, run: dict[str, Any], state: dict[str, Any] | None,
                      folder: Any, who: RunIdentity | None,
                      outcome: dict[str, Any]) -> None:
        rid = run["id"]
        if state is not None and not state.get("released"):
            try:
                await self.backend.stop(state, grace=0)
            except Exception:
                log.exception("run %s: could not remove sandbox %s", rid, state.get("id"))
        status: Status = outcome["status"]

        def write_back() -> None:
            output_sha = None
            if outcome.get("log") is not None:
                with contextlib.suppress(OSError):
                    self.records.keep(rid, SANDBOX_LOG,
                                      [outcome["log"].encode(errors="replace")[-MAX_KEPT:]])
            if folder is not None:
                try:  # the executed notebook, kept with the audit record
                    output_sha = self.records.keep(rid, OUTPUT_NOTEBOOK,
                                                   folder.iter(OUTPUT_NOTEBOOK))
                except FileNotFoundError:
                    pass
                except (OSError, BatchError) as e:
                    log.warning("run %s: output notebook not kept: %s", rid, e)
                folder.close()
            self._set(rid, expect=[Status.RUNNING], status=status.value, finished_at=utcnow(),
                      exit_code=outcome.get("exit_code"), failed_cell=outcome.get("failed_cell"),
                      error=(outcome.get("error") or None) and str(outcome["error"])[:4000],
                      output_sha256=output_sha)
            final = self._load(rid)
            self._record("finish", run["submitted_by"], run["project"],
                         outcome=OUTCOMES[Status(final["status"])],
                         **self._finish_details(final))

        try:
            await asyncio.to_thread(write_back)
        except Exception:
            log.exception("run %s: could not record its end", rid)
        log.info("run %s %s", rid, status.value)

    def _finish_details(self, run: dict[str, Any]) -> dict[str, Any]:
        return {
            "run_id": run["id"], "status": run["status"], "notebook": run["notebook"],
            "notebook_sha256": run["notebook_sha256"], "parameters": run["parameters"],
            "run_as": run["run_as"], "started_at": run["started_at"],
            "finished_at": run["finished_at"], "failed_cell": run["failed_cell"],
            "error": run["error"], "cancelled_by": run["cancelled_by"],
            "cells_done": run["progress"]["cells_done"],
            "cells_total": run["progress"]["cells_total"],
            "exit_code": run["exit_code"], "output_sha256": run.get("output_sha256"),
            "record": str(self.records.run_dir(run["id"])),
        }

    async def close(self) -> None:
        """Cancel running runs (their sandboxes are stopped) and stop the scheduler."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        for ev in list(self._cancel.values()):
            ev.set()
        tasks = list(self._active.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.sandbox.stop_grace + 30)
        if self._airlock is not None:
            self._airlock.close()
        self.engine.dispose()
