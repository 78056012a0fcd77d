"""Disclosure checks and previews in a one-shot sandbox (``ecluse.sandbox``).

The checker parses researcher-supplied files with pyarrow, openpyxl, lxml,
libhdf5 and zarr: a crafted file that exploits one of them must find itself
in a place that holds nothing. :class:`SandboxChecker` runs each inspection
(:func:`~ecluse.airlock.checks.inspect_named`: report and preview) as
``python -m ecluse.airlock.checkjob`` in a one-shot sandbox of its own, on
the airlock's host with the ``local`` backend (bubblewrap) whatever backend
runs the workspaces:

* an unprivileged uid/gid (``check_uid``/``check_gid``), no capabilities,
  ``no_new_privs``, the sandbox's seccomp filter;
* its own network namespace with no allowed port: no network at all;
* a read-only copy of the staged object under its display name at
  ``/airlock-check/in/`` (the staging area, the database, the state directory and its
  secrets are not mounted); no dataset under ``/data``; a project folder and
  home of its own, removed afterwards;
* for differencing (:meth:`SandboxChecker.difference`), the ledger rows of the
  request's scopes — and nothing else of the ledger — in a read-only file at
  ``/airlock-ledger/ledger.json``;
* CPU, memory and process limits (``check_cpu``, ``check_memory``) and the
  ``check_timeout``.

The result is one JSON line on stdout. Anything else — a timeout, the memory
limit, a crash, a sandbox that cannot start, output that is not the expected
JSON — gives the file verdict ``review`` with the reason (fail closed), which
needs a written reason to approve.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Project, Quota
from ..sandbox import Mount, SandboxSpec, UserIdentity
from ..sandbox.local import check_sandboxes
from ..sandbox.remote import LauncherSandbox
from .checkjob import LEDGER_DIR, LEDGER_FILE, RESULT_MARK
from .checks import unjudged
from .kubecheck import check_backend

log = logging.getLogger(__name__)

class CheckSandboxUnavailable(RuntimeError):
    """The deployment cannot run check sandboxes: the service refuses to start."""


#: where the job and its input are mounted in the check sandbox: a path no host
#: checkout or environment uses (a mount there would hide it)
CHECK_DIR = "/airlock-check"

#: slug prefix of the throw-away project of each check sandbox (reserved)
CHECK_PROJECT_PREFIX = "airlock-check-"


class SandboxChecker:
    """Inspect staged files in one-shot sandboxes (the airlock's ``checker``).

    Called from the service's worker threads; at most ``concurrency`` sandboxes
    run at once.
    """

    def __init__(self, settings: Any, conf: Any, *, backend: Any = None,
                 concurrency: int | None = None) -> None:
        # the checker is the airlock's own code: its environment, not the workspaces'
        sandbox = settings.sandbox.model_copy(update={"python_env": Path(sys.prefix)})
        self.settings = settings = settings.model_copy(update={"sandbox": sandbox})
        self.conf = conf
        if backend is None and settings.sandbox.backend == "kubernetes" and not (
                settings.sandbox.launcher_socket):
            # in a cluster: each check a Job of the check namespace (ecluse.airlock.kubecheck)
            backend = check_backend(settings)
        if backend is None and settings.sandbox.launcher_socket:
            # the service runs unprivileged: the launcher (root) starts the sandbox,
            # and its policy lets the airlock start check sandboxes and nothing else
            backend = LauncherSandbox(settings=settings, caller="airlock")
        if backend is None:
            if os.geteuid() != 0:
                raise CheckSandboxUnavailable(
                    "airlock.check_runner is sandbox, and check sandboxes (bubblewrap, "
                    "network namespaces, cgroups) are started by root only; set "
                    "sandbox.launcher_socket (the sandbox launcher), run the airlock "
                    "as root, or set airlock.check_runner: process (development only: the "
                    "service then parses untrusted files in its own processes)")
            backend = check_sandboxes(settings)
        self.backend = backend
        self.user = UserIdentity(conf.check_user, conf.check_uid, conf.check_gid)
        self.timeout = conf.check_timeout
        self._slots = threading.BoundedSemaphore(max(1, concurrency or conf.check_processes or 1))

    def shutdown(self) -> None:
        """The airlock is stopping: stop the check sandboxes running now. Their threads
        see them end and release them (the files stay ``checking``: the next start
        checks them again). Through the launcher nothing is needed: it stops the
        checks of a caller that goes away."""
        kill = getattr(self.backend, "kill_running", None)
        if kill is not None:
            stopped = kill()
            if stopped:
                log.info("stopped %d running check sandbox(es)", len(stopped))

    # ----------------------------------------------------------- the job

    def job_command(self, job_path: str) -> list[str]:
        """The command run in the sandbox (a probe in tests replaces it)."""
        return [str(Path(sys.prefix) / "bin" / "python"), "-I", "-m", "ecluse.airlock.checkjob",
                job_path]

    def __call__(self, object_path: Path, display_name: str, policy: Any, tmp_dir: Path,
                 preview_rows: int = 200) -> dict[str, Any]:
        with self._slots:
            try:
                result = asyncio.run(self.run(object_path, display_name, policy, tmp_dir,
                                              preview_rows))
            except Exception as e:
                log.error("check sandbox for %s failed: %s", display_name,
                          getattr(e, "log_message", e))
                return unjudged("automatic check could not run in its sandbox "
                                f"({type(e).__name__}); review by hand")
        return self.parse(result, display_name)

    async def run(self, object_path: Path, display_name: str, policy: Any, tmp_dir: Path,
                  preview_rows: int = 200) -> Any:
        """Run the job on a read-only copy of ``object_path``; the sandbox's RunResult."""
        return await self._sandbox(Path(tmp_dir), lambda work: self._stage(
            work, Path(object_path), display_name, policy, preview_rows))

    def difference(self, files: list[dict[str, Any]], released: list[dict[str, Any]],
                   policy: Any, tmp_dir: Path) -> list[list[dict[str, Any]]]:
        """The ``differencing`` findings of a request's files (:func:`.ledger.difference`),
        judged in a check sandbox that reads ``released`` — the ledger rows of the
        request's scopes — from a read-only mount at ``/airlock-ledger``. Raises when
        the sandbox gives no usable answer (the service then sends the files to review)."""
        with self._slots:
            result = asyncio.run(self._sandbox(
                Path(tmp_dir), lambda work: self._job(work, {
                    "kind": "difference", "files": files, "policy": _policy_data(policy)}),
                ledger=released))
        payload = self._payload(result, "differencing")
        if isinstance(payload, str):
            raise RuntimeError(f"differencing in its check sandbox {payload}")
        found = payload.get("differencing")
        if not isinstance(found, list) or len(found) != len(files):
            raise RuntimeError("differencing in its check sandbox gave no usable answer")
        return found

    async def _sandbox(self, tmp_dir: Path, stage: Callable[[Path], None],
                       ledger: list[dict[str, Any]] | None = None) -> Any:
        """Stage a job folder (``stage(work)``), run the job in a one-shot sandbox with
        it at ``/airlock-check`` (and ``ledger`` at ``/airlock-ledger``), both
        read-only; the sandbox's RunResult. Everything staged is removed afterwards."""
        work = Path(tempfile.mkdtemp(prefix="sbx-", dir=tmp_dir))
        released = Path(tempfile.mkdtemp(prefix="ledger-", dir=tmp_dir)) if ledger is not None \
            else None
        project = Project(
            slug=CHECK_PROJECT_PREFIX + secrets.token_hex(4), title="airlock check",
            ldap_group="-", gid=self.conf.check_gid,
            quota=Quota(cpu=self.conf.check_cpu, memory=self.conf.check_memory, pids=64),
        )
        try:
            await asyncio.to_thread(stage, work)
            mounts = [Mount(work, CHECK_DIR, read_only=True)]
            if released is not None:
                await asyncio.to_thread(self._stage_ledger, released, ledger or [])
                mounts.append(Mount(released, LEDGER_DIR, read_only=True))
            spec = SandboxSpec(
                project, self.user, self.job_command(f"{CHECK_DIR}/job.json"),
                env={"HOME": "/tmp", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
                allowed_ports=[], extra_mounts=mounts, workdir="/tmp", name="airlock-check",
            )
            return await self.backend.run(spec, timeout=self.timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if released is not None:
                shutil.rmtree(released, ignore_errors=True)
            await asyncio.to_thread(self._remove_project_dirs, project.slug)

    def _stage(self, work: Path, object_path: Path, display_name: str, policy: Any,
               preview_rows: int) -> None:
        """``work/in/<name>`` (a copy, readable by the check group only) and ``job.json``."""
        inbox = work / "in"
        inbox.mkdir()
        copy = inbox / display_name
        shutil.copyfile(object_path, copy)
        self._give(copy, 0o440)
        self._give(inbox, 0o750)
        self._job(work, {"name": display_name, "policy": _policy_data(policy),
                         "preview_rows": preview_rows})

    def _job(self, work: Path, job: dict[str, Any]) -> None:
        (work / "job.json").write_text(json.dumps(job, default=str))
        self._give(work / "job.json", 0o440)
        self._give(work, 0o750)

    def _stage_ledger(self, folder: Path, rows: list[dict[str, Any]]) -> None:
        """``folder/ledger.json``: the ledger rows of the request's scopes, nothing else."""
        (folder / LEDGER_FILE).write_text(json.dumps(rows, default=str))
        self._give(folder / LEDGER_FILE, 0o440)
        self._give(folder, 0o750)

    def _give(self, path: Path, mode: int) -> None:
        """Give ``path`` to the check group (``mode``). Run unprivileged (through the
        launcher), the service cannot: it makes it readable by all instead, inside its
        own private (0700) staging area, which only the check sandbox's mounts open."""
        if os.geteuid() == 0:
            os.chown(path, 0, self.conf.check_gid)
            os.chmod(path, mode)
        else:
            os.chmod(path, mode | (mode >> 3 & 0o5))

    def _remove_project_dirs(self, slug: str) -> None:
        if not slug.startswith(CHECK_PROJECT_PREFIX):  # pragma: no cover - defensive
            return
        root = Path(self.settings.sandbox.projects_root or Path(self.settings.state_dir)
                    / "projects")
        shutil.rmtree(root / slug, ignore_errors=True)

    # ----------------------------------------------------------- the result

    def _payload(self, result: Any, display_name: str) -> dict[str, Any] | str:
        """The job's JSON answer, or what went wrong (``timed out after 2s``)."""
        if result.timed_out:
            return f"timed out after {self.timeout:.0f}s"
        if result.oom_killed:
            return f"ran out of memory ({self.conf.check_memory} bytes)"
        payload = None
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                try:
                    payload = json.loads(line[len(RESULT_MARK):])
                except ValueError:
                    payload = None
                break
        if result.exit_code != 0 or not isinstance(payload, dict):
            log.error("check sandbox for %s: exit %s, stderr %s", display_name,
                      result.exit_code, result.stderr[-2000:])
            return f"failed (exit status {result.exit_code})"
        return payload

    def parse(self, result: Any, display_name: str) -> dict[str, Any]:
        """The inspection from a finished sandbox, or ``review`` saying what went wrong."""
        payload = self._payload(result, display_name)
        if isinstance(payload, str):
            return unjudged(f"automatic check {payload}; review by hand")
        report, preview = payload.get("report"), payload.get("preview")
        if not isinstance(report, dict) or not isinstance(preview, dict):
            return unjudged("automatic check gave no usable report; review by hand")
        out = {"report": report, "preview": preview}
        if isinstance(payload.get("proposal"), dict):
            out["proposal"] = payload["proposal"]
        return out


def _policy_data(policy: Any) -> Any:
    return policy.model_dump(mode="json") if hasattr(policy, "model_dump") else policy
