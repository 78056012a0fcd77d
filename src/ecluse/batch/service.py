"""The batch business layer: submit, list, show, logs, cancel, export — and the queue runner.

Every entry point (REST API, CLI through the API, tests) calls
:class:`BatchService`. Methods take the acting :class:`Identity` (a hub user
and their hub groups), check permissions (raising domain exceptions), change
the queue table, then record the audit event.

Runs are queued in the database and started in submission order by
:meth:`BatchService.run_scheduler` (:mod:`.runner`) while fewer than
``BatchSettings.concurrency`` are running. Each run is one one-shot sandbox
of the project (``Sandbox.launch(one_shot=True)``: same isolation as a
workspace, no network at all) running papermill as the run's identity.

A run's inputs and its executed notebook are kept in the run record store
(:mod:`.records`), the service's own. Its log and output files are project data:
staff see a run's status, exit code and error class; reading its log or its
files needs membership of the project, or a member's share
(:meth:`BatchService.share`), and every read is audited (``batch.read``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from ..sandbox import sandbox_for
from ..sandbox.remote import audit_for
from ..settings.batch import BatchSettings, batch_settings
from . import files as fs
from .errors import (
    BatchError,
    InvalidInput,
    InvalidState,
    NotFound,
    PermissionDenied,
    TooLarge,
    Unavailable,
)
from .identity import Identity, RunIdentity, _Recorder, directory_resolver
from .kube import KubeRunFolders, batch_backend
from .records import ROOT_NAME, RecordStore
from .runner import QueueRunner
from .runs import (
    BOOKKEEPING,
    EVENTS,
    FINAL,
    LOG,
    OUTCOMES,
    TRANSITIONS,
    Status,
    make_engine,
    run_dict,
    runs_table,
    utcnow,
)

__all__ = ["BatchService", "Identity", "RunIdentity", "directory_resolver"]

log = logging.getLogger("ecluse.batch")

RUN_ID_RE = re.compile(r"^br-[0-9a-f]{12}$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
NOTEBOOK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,200}\.ipynb$")
MAX_LOG_BYTES = 4 * 1024 * 1024


class BatchService(QueueRunner):
    """Papermill runs of staff, queued, executed in project sandboxes, audited."""

    def __init__(
        self,
        settings: Any,
        *,
        engine: Engine,
        backend: Any = None,
        audit: Any = None,
        conf: BatchSettings | None = None,
        resolve_identity: Callable[[str, str], RunIdentity] | None = None,
        airlock_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.conf = conf or batch_settings(settings)
        self.engine = engine
        self._backend = backend
        self.audit = audit if audit is not None else _Recorder()
        self.resolve_identity = resolve_identity or directory_resolver(settings)
        self._airlock_factory = airlock_factory
        self._airlock: Any = None
        self.records = RecordStore(Path(settings.state_dir) / ROOT_NAME)
        self._folders: Any = None
        self._active: dict[str, asyncio.Task] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> BatchService:
        conf = kwargs.pop("conf", None) or batch_settings(settings)
        Path(settings.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        url = conf.resolved_database_url(settings.db_dir)
        if url.startswith("sqlite:///"):  # its own folder (the service's user owns it)
            Path(url.removeprefix("sqlite:///")).parent.mkdir(mode=0o700, exist_ok=True)
        engine = make_engine(url)
        # written through the launcher when the service runs as its own user (no key)
        kwargs.setdefault("audit", audit_for(settings, "batch"))
        return cls(settings, engine=engine, conf=conf, **kwargs)

    @property
    def backend(self) -> Any:
        if self._backend is None:
            if self.settings.sandbox.backend == "kubernetes" and not (
                    self.settings.sandbox.launcher_socket):
                # runs are Jobs, their folders on the project's batch-runs claim
                self._backend = batch_backend(self.settings)
            else:
                self._backend = sandbox_for(self.settings, "batch")
        return self._backend

    @property
    def folders(self) -> Any:
        """Where runs' folders are made and read: by the launcher when the settings name
        one (the service then has no access to project folders), else here, as root."""
        if self._folders is None:
            if self.settings.sandbox.backend == "kubernetes" and not (
                    self.settings.sandbox.launcher_socket):
                self._folders = KubeRunFolders(self.settings, self.backend)
            else:
                self._folders = fs.run_folders(self.settings, self.backend)
        return self._folders

    def identity(self, name: str, groups: Iterable[str]) -> Identity:
        return Identity(name, frozenset(groups), self.conf.staff_group)

    # ------------------------------------------------------------ helpers

    def _record(self, event: str, actor: str, project: str | None, outcome: str = "success",
                **details: Any) -> None:
        self.audit.record(EVENTS[event], actor=actor, project=project, outcome=outcome,
                          **details)

    def require_staff(self, user: Identity, action: str, project: str | None = None) -> None:
        if not user.is_staff:
            err = PermissionDenied(f"only platform staff may {action} batch runs")
            self._record("denied", user.name, project, outcome="denied", action=action,
                         reason=str(err))
            raise err

    def _load(self, run_id: Any) -> dict[str, Any]:
        if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
            raise NotFound(f"no run {str(run_id)[:40]!r}")
        with self.engine.connect() as c:
            row = c.execute(select(runs_table).where(runs_table.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return run_dict(row)

    def _set(self, run_id: str, *, expect: Iterable[Status] | None = None, **values: Any) -> bool:
        """Update a run; with ``expect``, only from those statuses (checked by the table)."""
        if "status" in values and expect is not None:
            target = Status(values["status"])
            for s in expect:
                assert target in TRANSITIONS[s], f"{s} -> {target} is not a transition"
        q = update(runs_table).where(runs_table.c.id == run_id).values(**values)
        if expect is not None:
            q = q.where(runs_table.c.status.in_([s.value for s in expect]))
        with self.engine.begin() as c:
            return c.execute(q).rowcount == 1

    def shared_dir(self, project: str) -> Path:
        return fs.shared_dir(self.settings, project)

    def _wake_up(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------ submit

    def _clean_parameters(self, parameters: Any) -> dict[str, Any]:
        if parameters is None:
            return {}
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters: expected an object of name -> value")
        if len(parameters) > self.conf.max_parameters:
            raise InvalidInput(f"parameters: at most {self.conf.max_parameters}")
        for name in parameters:
            if not isinstance(name, str) or not PARAM_RE.match(name):
                raise InvalidInput(f"parameters: {str(name)[:70]!r} is not a Python identifier")
        if len(json.dumps(parameters)) > 64 * 1024:
            raise TooLarge("parameters: at most 64 KiB of JSON")
        return parameters

    def _clean_notebook(self, name: Any, content: Any) -> tuple[str, bytes]:
        if not isinstance(name, str) or not NOTEBOOK_RE.match(os.path.basename(name)):
            raise InvalidInput("notebook: expected a file name ending in .ipynb")
        name = os.path.basename(name)
        if isinstance(content, dict | list):
            data = json.dumps(content, ensure_ascii=False).encode()
        elif isinstance(content, str):
            data = content.encode()
        elif isinstance(content, bytes):
            data = content
        else:
            raise InvalidInput("notebook: expected the notebook's JSON")
        if len(data) > self.conf.max_notebook_bytes:
            raise TooLarge(f"notebook: at most {self.conf.max_notebook_bytes} bytes")
        try:
            import nbformat

            nbformat.reads(data.decode(), as_version=4)
        except Exception as e:
            raise InvalidInput(f"notebook: not a Jupyter notebook ({type(e).__name__})",
                               log_message=f"notebook {name}: {e}") from None
        return name, data

    def submit(
        self, user: Identity, *, project: Any, notebook: Any, content: Any,
        parameters: Any = None, as_user: Any = None, timeout: Any = None,
    ) -> dict[str, Any]:
        """Queue a run of ``content`` (the notebook's bytes or JSON) in ``project``."""
        if not isinstance(project, str) or project not in self.settings.projects:
            self.require_staff(user, "submit")
            raise NotFound(f"no project {str(project)[:64]!r}")
        self.require_staff(user, "submit", project)
        name, data = self._clean_notebook(notebook, content)
        params = self._clean_parameters(parameters)
        if timeout is None:
            timeout = self.conf.default_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
            0 < timeout <= self.conf.max_timeout
        ):
            raise InvalidInput(f"timeout: expected seconds in (0, {self.conf.max_timeout:g}]")
        run_as = as_user if as_user not in (None, "") else user.name
        if not isinstance(run_as, str):
            raise InvalidInput("as_user: expected a user name")
        try:
            self.resolve_identity(project, run_as)
        except (PermissionDenied, Unavailable) as e:
            self._record("denied", user.name, project, outcome="denied", action="submit",
                         run_as=run_as, reason=str(e))
            raise
        run_id = "br-" + secrets.token_hex(6)
        sha, params_sha = self.records.store_inputs(run_id, data, params)
        with self.engine.begin() as c:
            c.execute(runs_table.insert().values(
                id=run_id, project=project, notebook=name, notebook_sha256=sha,
                parameters=json.dumps(params), submitted_by=user.name, run_as=run_as,
                status=Status.QUEUED.value, timeout=float(timeout), created_at=utcnow(),
                cells_done=0, cells_total=0,
            ))
        self._record("submit", user.name, project, run_id=run_id, notebook=name,
                     notebook_sha256=sha, parameters=params, parameters_sha256=params_sha,
                     run_as=run_as, timeout=float(timeout),
                     record=str(self.records.run_dir(run_id)))
        self._wake_up()
        return self._load(run_id)

    # ------------------------------------------------------------ read

    def list_runs(self, user: Identity, *, project: str | None = None,
                  status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        self.require_staff(user, "list")
        if status is not None and status not in Status._value2member_map_:
            raise InvalidInput(f"status: expected one of {', '.join(s.value for s in Status)}")
        q = select(runs_table).order_by(runs_table.c.seq.desc()).limit(max(1, min(limit, 1000)))
        if project:
            q = q.where(runs_table.c.project == project)
        if status:
            q = q.where(runs_table.c.status == status)
        with self.engine.connect() as c:
            return [run_dict(r) for r in c.execute(q)]

    def get_run(self, user: Identity, run_id: Any) -> dict[str, Any]:
        self.require_staff(user, "read")
        return self._load(run_id)

    # ------------------------------------------------------------ project data

    def _may_read(self, user: Identity, run: dict[str, Any], what: str) -> str:
        """Why ``user`` may read the run's ``what`` (log, files): ``member`` or ``shared``.

        A run's log and files are project data: members of the run's project
        read them; anyone else (staff included) only once a member shared the
        run. Refusals are audited (``batch.denied``).
        """
        if run["project"] in user.groups:
            return "member"
        if run.get("shared_by"):
            if user.is_staff:
                return "shared"
        err = PermissionDenied(
            f"the {what} of run {run['id']} is data of project {run['project']}: only its "
            "members may read it, or platform staff once a member shares the run "
            "(ecluse batch share); staff see its status, exit code and error class "
            "(ecluse batch show)")
        self._record("denied", user.name, run["project"], outcome="denied", action=f"read-{what}",
                     run_id=run["id"], reason=str(err))
        raise err

    def logs(self, user: Identity, run_id: Any) -> str:
        """``log.txt`` of the run folder (papermill's log with the cell outputs), audited."""
        run = self._load(run_id)
        access = self._may_read(user, run, "log")
        text = "" if run["status"] == Status.QUEUED else self._read_log_file(run)
        self._record("read", user.name, run["project"], run_id=run["id"], what="log",
                     access=access, bytes=len(text.encode()))
        return text

    def _read_log_file(self, run: dict[str, Any]) -> str:
        try:
            with self.folders.open(run["project"], run["id"]) as folder:
                return (folder.read(LOG, MAX_LOG_BYTES) or b"").decode(errors="replace")
        except fs.UnsafePath:
            return ""

    def share(self, user: Identity, run_id: Any) -> dict[str, Any]:
        """A project member lets platform staff read the run's log and files (audited)."""
        run = self._load(run_id)
        if run["project"] not in user.groups:
            err = PermissionDenied(
                f"only members of project {run['project']} may share its run {run['id']}")
            self._record("denied", user.name, run["project"], outcome="denied", action="share",
                         run_id=run["id"], reason=str(err))
            raise err
        if not run.get("shared_by"):
            self._set(run["id"], shared_by=user.name, shared_at=utcnow())
            self._record("share", user.name, run["project"], run_id=run["id"])
        return self._load(run["id"])

    # ------------------------------------------------------------ cancel

    async def cancel(self, user: Identity, run_id: Any) -> dict[str, Any]:
        """Cancel a queued run, or stop a running one's sandbox (then ``cancelled``)."""
        await asyncio.to_thread(self.require_staff, user, "cancel")
        run = await asyncio.to_thread(self._load, run_id)
        rid = run["id"]
        if Status(run["status"]) in FINAL:
            raise InvalidState(f"run {rid} is {run['status']}: nothing to cancel")
        queued = await asyncio.to_thread(
            self._set, rid, expect=[Status.QUEUED], status=Status.CANCELLED.value,
            finished_at=utcnow(), cancelled_by=user.name,
        )
        if queued:
            await asyncio.to_thread(self._record, "cancel", user.name, run["project"],
                                    run_id=rid, was="queued")
            await asyncio.to_thread(self._record, "finish", run["submitted_by"],
                                    run["project"], outcome=OUTCOMES[Status.CANCELLED],
                                    **self._finish_details(await asyncio.to_thread(
                                        self._load, rid)))
            return await asyncio.to_thread(self._load, rid)
        await asyncio.to_thread(self._set, rid, cancelled_by=user.name)
        await asyncio.to_thread(self._record, "cancel", user.name, run["project"],
                                run_id=rid, was="running")
        event = self._cancel.get(rid)
        task = self._active.get(rid)
        if event is not None:
            event.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task),
                                       self.settings.sandbox.stop_grace + 30)
        return await asyncio.to_thread(self._load, rid)

    # ------------------------------------------------------------ export

    def airlock(self) -> Any:
        """The airlock's API as this service's own hub token (:class:`AirlockAPI`)."""
        if self._airlock is None:
            if self._airlock_factory is not None:
                self._airlock = self._airlock_factory()
            else:
                self._airlock = AirlockAPI.from_environment(self.settings)
        return self._airlock

    def output_files(self, user: Identity, run_id: Any) -> list[dict[str, Any]]:
        """The files of a run's folder (name, size, whether the service wrote it), audited."""
        run = self._load(run_id)
        access = self._may_read(user, run, "files")
        with self.folders.open(run["project"], run["id"]) as folder:
            files = [{"name": n, "size": s, "bookkeeping": n in BOOKKEEPING}
                     for n, s in folder.list()]
        self._record("read", user.name, run["project"], run_id=run["id"], what="files",
                     access=access, files=[f["name"] for f in files])
        return files

    def export(self, user: Identity, run_id: Any, *, title: Any, justification: Any = None,
               files: Any = None, submit: bool = True, about: Any = None) -> dict[str, Any]:
        """Put a finished run's outputs into an airlock request, as ``user``.

        Through the airlock's API (:class:`AirlockAPI`: this service's token, for
        ``user``), which does everything else: the requester must be staff and a
        project member, each file is staged (sha256) and checked, and the request
        goes to review like any other. Default files: every
        file of the run folder except ``input.ipynb``, ``parameters.json``,
        ``log.txt`` and the progress/result bookkeeping. ``about`` maps a file
        name to its ``context``, ``controls`` and ``supporting`` mark (the airlock
        needs context and controls to submit a ``fail``/``review`` file): when they
        are missing the request stays a draft, with ``submit_refused`` saying why.
        """
        self.require_staff(user, "export")
        run = self._load(run_id)
        if Status(run["status"]) not in FINAL:
            raise InvalidState(f"run {run['id']} is {run['status']}: export it once finished")
        if files is not None and (not isinstance(files, list)
                                  or not all(isinstance(f, str) for f in files)):
            raise InvalidInput("files: expected a list of file names of the run folder")
        about = _about(about)
        airlock = self.airlock()
        who = (user.name, run["project"])
        with self.folders.open(run["project"], run["id"]) as folder:
            present = dict(folder.list())
            chosen = files if files else [n for n in present if n not in BOOKKEEPING]
            missing = [n for n in chosen if n not in present]
            if missing:
                raise InvalidInput(f"files: not in the run folder: {', '.join(missing)[:200]}")
            unknown = sorted(set(about) - set(chosen))
            if unknown:
                raise InvalidInput(f"about: {unknown[0]!r} is not among the files exported")
            if not chosen:
                raise InvalidInput(f"run {run['id']} has no output files to export")
            if justification in (None, ""):
                justification = (
                    f"Outputs of batch run {run['id']}: notebook {run['notebook']} "
                    f"(sha256 {run['notebook_sha256']}), parameters "
                    f"{json.dumps(run['parameters'], ensure_ascii=False)}, run as "
                    f"{run['run_as']}, {run['status']}."
                )
            req = airlock.create_request(who, project=run["project"], title=title,
                                         justification=justification)
            for name in chosen:
                said = about.get(name, {})
                f = airlock.add_file(who, req["id"], name, folder.iter(name),
                                     supporting=said.get("supporting"))
                if said.get("context") or said.get("controls"):
                    airlock.describe_file(who, req["id"], f["id"], context=said.get("context"),
                                          controls=said.get("controls"))
        refused = None
        if submit:
            # the airlock checks uploads after answering: submit once every file is judged
            airlock.wait_checked(who, req["id"])
            try:
                airlock.submit(who, req["id"], comment=f"batch run {run['id']}")
            except InvalidInput as e:  # the airlock's 422: a file lacks its context
                current = airlock.get_request(who, req["id"])["files"]
                if not any(f["needs_context"] for f in current):
                    raise
                refused = str(e)  # every file is in: the draft waits for their context
        self._record("export", user.name, run["project"], run_id=run["id"],
                     request_id=req["id"], files=chosen, submitted=bool(submit and not refused))
        out = airlock.get_request(who, req["id"])
        if refused:
            out["submit_refused"] = refused
        return out


class AirlockAPI:
    """The airlock's REST API, called with the batch service's own hub token for a staff
    member (``X-Ecluse-On-Behalf-Of``) and one project (``X-Ecluse-Project``): the
    airlock lets that token create a request, add files (and set their context,
    controls and supporting mark), submit and read it, for staff
    only (``ecluse.airlock.web.base.BaseHandler.acting_for``). Its errors come back as
    the batch service's, with the airlock's message."""

    STATUS: dict[int, type[BatchError]] = {400: InvalidInput, 403: PermissionDenied,
                                           404: NotFound, 409: InvalidState, 413: TooLarge,
                                           422: InvalidInput}

    def __init__(self, url: str, token: str, *, timeout: float = 600.0) -> None:
        import requests

        self.base = url.rstrip("/") + "/api/v1"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    @classmethod
    def from_environment(cls, settings: Any) -> AirlockAPI:
        """As the hub starts the service: its token (``JUPYTERHUB_API_TOKEN``) and the
        airlock's address (``ECLUSE_AIRLOCK_URL``, set by the hub's service entry)."""
        # deferred: the airlock's address rule, only when a run is exported
        from ..airlock.hub import airlock_url

        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if not token:
            raise Unavailable("exports go through the airlock's API, and this batch service "
                              "has no hub token (it is not run by the hub)")
        return cls(os.environ.get("ECLUSE_AIRLOCK_URL") or airlock_url(settings, None), token)

    def _call(self, who: tuple[str, str], method: str, path: str, **kw: Any) -> Any:
        import requests

        user, project = who
        headers = {"X-Ecluse-On-Behalf-Of": user, "X-Ecluse-Project": project,
                   **kw.pop("headers", {})}
        try:
            r = self.session.request(method, self.base + path, headers=headers,
                                     timeout=self.timeout, **kw)
        except requests.RequestException as e:
            raise Unavailable("the airlock cannot be reached; try again shortly",
                              log_message=f"airlock {method} {path}: {e}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            err = (data or {}).get("error") if isinstance(data, dict) else None
            message = (err or {}).get("message") or f"HTTP {r.status_code}"
            raise self.STATUS.get(r.status_code, Unavailable)(f"airlock: {message}")
        return data

    def create_request(self, who: tuple[str, str], *, project: str, title: Any,
                       justification: Any) -> dict[str, Any]:
        return self._call(who, "POST", "/requests", json={
            "project": project, "title": title, "justification": justification})

    def add_file(self, who: tuple[str, str], request_id: str, name: str,
                 chunks: Iterable[bytes], *, supporting: bool | None = None) -> dict[str, Any]:
        from urllib.parse import quote

        params = {} if supporting is None else {"supporting": "true" if supporting else "false"}
        return self._call(who, "POST", f"/requests/{request_id}/files", data=chunks,
                          params=params,
                          headers={"Content-Type": "application/octet-stream",
                                   "X-Filename": quote(name, safe="")})

    def describe_file(self, who: tuple[str, str], request_id: str, file_id: int, *,
                      context: str | None = None, controls: str | None = None
                      ) -> dict[str, Any]:
        """The file's context and statistical controls (PATCH, ``FileHandler``)."""
        body = {k: v for k, v in (("context", context), ("controls", controls))
                if v is not None}
        return self._call(who, "PATCH", f"/requests/{request_id}/files/{file_id}", json=body)

    def submit(self, who: tuple[str, str], request_id: str, comment: str) -> dict[str, Any]:
        return self._call(who, "POST", f"/requests/{request_id}/submit",
                          json={"comment": comment})

    def get_request(self, who: tuple[str, str], request_id: str) -> dict[str, Any]:
        return self._call(who, "GET", f"/requests/{request_id}")

    def wait_checked(self, who: tuple[str, str], request_id: str,
                     timeout: float = 900.0) -> dict[str, Any]:
        """Read the request until none of its files is ``checking`` any more (the airlock
        answers an upload before its check, ``check_in_background``); the request."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            req = self.get_request(who, request_id)
            if not any(f.get("verdict") == "checking" for f in req.get("files", [])):
                return req
            if time.monotonic() > deadline:
                raise Unavailable(f"the airlock is still checking the files of {request_id} "
                                  f"after {timeout:.0f}s; submit it from its page later")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def close(self) -> None:
        self.session.close()


def _about(value: Any) -> dict[str, dict[str, Any]]:
    """``{file name: {"context", "controls", "supporting"}}`` of an export, checked."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("about: expected an object mapping file names to their context, "
                           "controls and supporting mark")
    out: dict[str, dict[str, Any]] = {}
    for name, said in value.items():
        if not isinstance(said, dict) or set(said) - {"context", "controls", "supporting"}:
            raise InvalidInput(f"about: {name!r}: expected context, controls and supporting")
        if not all(isinstance(said.get(k, ""), str) for k in ("context", "controls")):
            raise InvalidInput(f"about: {name!r}: context and controls are text")
        if not isinstance(said.get("supporting", False), bool):
            raise InvalidInput(f"about: {name!r}: supporting is true or false")
        out[str(name)] = said
    return out
