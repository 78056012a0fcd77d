"""Import requests: controlled ingress into a project (issue 24 item 1; SATRE 3.1.04, 3.1.12).

A file comes into a project only this way:

1. **request** — a project member through the airlock's page or API *with a browser
   session* (from outside the workspace: an API token, which is what a workspace holds,
   is refused for members), or staff (page, API, or ``ecluse airlock import load`` on the
   host as root, for datasets too large to upload). States: ``open``;
2. **quarantine** — each file is written to ``<airlock storage>/quarantine/<request>/``
   (0700, the airlock's own; never mounted in any sandbox) and **checked**
   (:mod:`.ingress_checks`): type by content, sizes, archive limits, executable content
   only in a *code import*; a git bundle is verified with ``git bundle verify`` in a
   check sandbox (no check sandbox: refused). A refused file is recorded with its
   reasons and blocks submission until removed;
3. **submit** (the requester) → ``submitted``;
4. **approve** or **reject** by staff or a member of the project's ``data_owner_group``
   (``projects.yaml``; asked of the directory at that moment), never by the requester
   under any of their names, never by another project's data owners;
5. **deliver** — the files are re-hashed and copied to
   ``<projects_root>/<slug>/inbox/<request>/`` with ``MANIFEST.sha256`` (root-owned,
   group-readable by the project, read-only), which every backend mounts read-only at
   ``/project/inbox``; the quarantine copy is removed. States ``approved`` (delivery
   pending: the service could not write there; ``ecluse airlock import deliver`` as
   root finishes it) then ``delivered``.

Every step is audited (``airlock.import.*``), refusals included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..auditevents import AuditEvent
from ..directory import DirectoryError, DirectoryUnavailable, group_key
from ..i18n import N_
from ..people import Person
from ..settings.ingress import ImportSettings
from .errors import (
    IdentityUnavailable,
    IntegrityFailure,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    TooLarge,
)
from .ingress_checks import Limits, Verdict, check_file
from .ingress_models import ImportFile, ImportRequest
from .models import as_utc, utcnow
from .permissions import Identity
from .storage import clean_filename

log = logging.getLogger(__name__)

IMPORT_ID_PREFIX = "im-"
MANIFEST = "MANIFEST.sha256"
OPEN, SUBMITTED, APPROVED, DELIVERED, REJECTED, WITHDRAWN = (
    "open", "submitted", "approved", "delivered", "rejected", "withdrawn")
STATES = (OPEN, SUBMITTED, APPROVED, DELIVERED, REJECTED, WITHDRAWN)
CHUNK = 1024 * 1024


class DataOwners:
    """Who is a data owner of a project: a member of its ``data_owner_group``, as the
    directory says now (fail closed: a directory that does not answer decides nothing)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def memberships(self, name: str) -> list[str]:
        from ..directory import Directory  # deferred: ldap3 only where the directory is used

        return Directory(self.settings.ldap).lookup(name).memberships

    def __call__(self, name: str, project: Any) -> bool:
        group = getattr(project, "data_owner_group", None)
        if not group:
            return False
        try:
            groups = self.memberships(name)
        except DirectoryUnavailable as e:
            raise IdentityUnavailable(
                "the directory (LDAP) does not answer: whether you are a data owner of "
                f"project {project.slug} cannot be checked; try again in a few minutes",
                log_message=f"{name}: {e}") from None
        except DirectoryError:
            return False
        return group_key(group) in groups


class GitBundleVerifier:
    """``git bundle verify`` and an fsck'd fetch of an imported bundle in a one-shot check
    sandbox
    (:class:`~.checkbox.SandboxChecker`): no network, nothing of the airlock mounted but
    a copy of the bundle. Without a check sandbox, bundles are refused."""

    def __init__(self, checker: Any) -> None:
        self.checker = checker

    def __call__(self, path: Path, tmp_dir: Path) -> str | None:
        """``None`` when the bundle verifies; else why it is refused."""
        if not hasattr(self.checker, "backend"):
            return ("git bundles are verified in a check sandbox and this airlock runs "
                    "none (airlock.check_runner): refused")
        try:
            result = asyncio.run(self._run(path, tmp_dir))
        except Exception as e:  # a sandbox that cannot start: refuse
            log.error("git bundle verify: %s", getattr(e, "log_message", e))
            return f"git bundle verify could not run in its sandbox ({type(e).__name__})"
        if result.timed_out or result.exit_code != 0:
            tail = (result.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return f"git bundle verify failed: {tail[0][:300]}"
        return None

    async def _run(self, path: Path, tmp_dir: Path) -> Any:
        # deferred: the check sandbox's modules, only for a git bundle
        from ..config import Project, Quota
        from ..sandbox import Mount, SandboxSpec  # deferred: as above
        from .checkbox import CHECK_DIR, CHECK_PROJECT_PREFIX  # deferred: as above

        c = self.checker
        # ``<staging>/tmp/sbx-*``: the one folder the launcher mounts for the airlock
        work = Path(tempfile.mkdtemp(prefix="sbx-", dir=tmp_dir))
        project = Project(slug=CHECK_PROJECT_PREFIX + secrets.token_hex(4),
                          title="airlock check", ldap_group="-", gid=c.conf.check_gid,
                          quota=Quota(cpu=c.conf.check_cpu, memory=c.conf.check_memory,
                                      pids=64))
        try:
            shutil.copyfile(path, work / "in.bundle")
            c._give(work / "in.bundle", 0o440)
            c._give(work, 0o750)
            # verify (complete: no prerequisite commit), then read every object with
            # fsck (a bundle whose pack is damaged or crafted verifies, but fails here)
            bundle = f"{CHECK_DIR}/in.bundle"
            script = ("git init -q /tmp/r && cd /tmp/r && "
                      f"git bundle verify {bundle} && "
                      "exec git -c transfer.fsckObjects=true -c fetch.fsckObjects=true "
                      f"fetch -q {bundle} '+refs/*:refs/imported/*'")
            spec = SandboxSpec(project, c.user, ["/bin/sh", "-c", script],
                               env={"HOME": "/tmp", "GIT_CONFIG_NOSYSTEM": "1"},
                               allowed_ports=[], workdir="/tmp", name="airlock-check",
                               extra_mounts=[Mount(work, CHECK_DIR, read_only=True)])
            return await c.backend.run(spec, timeout=c.timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            await asyncio.to_thread(c._remove_project_dirs, project.slug)


class IngressService:
    """Import requests over the airlock's database, audit log and people."""

    def __init__(self, airlock: Any, *, quarantine: Path, projects_root: Path,
                 conf: ImportSettings | None = None,
                 data_owners: Callable[[str, Any], bool] | None = None,
                 bundle_verifier: Callable[[Path, Path], str | None] | None = None,
                 projects: Mapping[str, Any] | None = None) -> None:
        self.airlock = airlock
        self._projects = projects
        self.quarantine = Path(quarantine)
        self.projects_root = Path(projects_root)
        self.conf = conf or ImportSettings()
        self.data_owners = data_owners or (lambda name, project: False)
        self.bundle_verifier = bundle_verifier or GitBundleVerifier(None)

    @classmethod
    def from_settings(cls, settings: Any, airlock: Any) -> IngressService:
        conf = airlock.settings.imports
        return cls(airlock, quarantine=airlock.staging.root / "quarantine",
                   projects_root=Path(settings.projects_root), conf=conf,
                   data_owners=DataOwners(settings),
                   bundle_verifier=GitBundleVerifier(airlock.checker))

    @property
    def projects(self) -> Mapping[str, Any]:
        return self._projects if self._projects is not None else self.airlock.projects

    @property
    def limits(self) -> Limits:
        c = self.conf
        return Limits(max_file_bytes=c.max_file_bytes, max_unpacked_bytes=c.max_unpacked_bytes,
                      max_members=c.max_archive_members, max_ratio=c.max_ratio,
                      max_nesting=c.max_nesting)

    # ------------------------------------------------------------ audit

    def _audit(self, event: AuditEvent, user: Identity | str, req: ImportRequest | None,
               outcome: str = "success", **details: Any) -> None:
        actor = user if isinstance(user, str) else user.name
        project = req.project if req is not None else details.pop("project", None)
        if req is not None:
            details.setdefault("import_id", req.id)
        self.airlock.audit.record(event, actor=actor, project=project, outcome=outcome,
                                  **details)

    @contextlib.contextmanager
    def _guard(self, user: Identity, action: str, import_id: str | None = None,
               project: str | None = None) -> Iterator[None]:
        """Audit every refusal of ``action`` (permission, state, policy, directory)."""
        try:
            yield
        except (PermissionDenied, InvalidTransition, PolicyViolation, IdentityUnavailable,
                NotFound) as e:
            with contextlib.suppress(Exception):
                self._audit(AuditEvent.AIRLOCK_IMPORT_DENIED, user, None, outcome="denied",
                            action=action, import_id=import_id, project=project,
                            reason=str(e))
            raise

    def _load(self, s: Any, import_id: Any) -> ImportRequest:
        if not isinstance(import_id, str) or not import_id.startswith(IMPORT_ID_PREFIX):
            raise NotFound(f"no import request {str(import_id)[:40]!r}")
        req = s.scalars(select(ImportRequest).where(ImportRequest.id == import_id)
                        .options(selectinload(ImportRequest.files))).first()
        if req is None:
            raise NotFound(f"no import request {import_id}")
        return req

    # ------------------------------------------------------------ who may

    def _is_owner(self, user: Identity, project: str,
                  memo: dict[str, bool] | None = None) -> bool:
        """A data owner of ``project`` (the directory is asked once per project in
        ``memo``, e.g. over a list)."""
        if memo is not None and project in memo:
            return memo[project]
        p = self.projects.get(project)
        owner = p is not None and self.data_owners(user.name, p)
        if memo is not None:
            memo[project] = owner
        return owner

    def _same_person(self, user: Identity, req: ImportRequest) -> str | None:
        if user.name == req.requester:
            return "the same name"
        me = self.airlock._as_person(user).person if self.airlock.people else user.person
        return me.same_as(Person(req.requester, req.requester_dn, req.requester_uid_number))

    def _require_view(self, user: Identity, req: ImportRequest,
                      memo: dict[str, bool] | None = None) -> None:
        if user.is_staff or user.in_project(req.project) or user.name == req.requester:
            return
        if self._is_owner(user, req.project, memo):
            return
        raise NotFound(f"no import request {req.id}")

    def _require_requester(self, user: Identity, req: ImportRequest, action: str) -> None:
        if user.name != req.requester:
            raise PermissionDenied(f"only the requester ({req.requester}) may {action} "
                                   "this import request")
        if req.state != OPEN:
            raise InvalidTransition(f"import request {req.id} is {req.state}: cannot "
                                    f"{action} (only while open)")

    # ------------------------------------------------------------ requests

    def create(self, user: Identity, *, project: Any, title: Any, justification: Any,
               code: Any = False, source: str = "upload", via_token: bool = False
               ) -> dict[str, Any]:
        """Open an import request. Staff may open one for any project; a member of the
        project only with a browser session (``via_token``: an API token, which a
        workspace holds, is refused for members: imports come from outside)."""
        if not self.conf.enabled:
            raise PermissionDenied(N_("import requests are turned off (airlock.imports.enabled)"))
        if not isinstance(project, str) or not project:
            raise InvalidInput(N_("project: expected a project slug"))
        title = self.airlock._text(title, "title", required=True,
                                   limit=self.airlock.settings.max_title_chars)
        justification = self.airlock._text(justification, "justification", required=True)
        if not isinstance(code, bool):
            raise InvalidInput(N_("code: expected true or false"))
        with self._guard(user, "create", project=project):
            if project not in self.projects:
                raise NotFound(f"no project {project}")
            if not user.is_staff:
                if not user.is_member(project):
                    raise PermissionDenied(
                        f"only members of project {project} or staff may bring files into it")
                if via_token:
                    raise PermissionDenied(N_(
                        "imports come from outside the workspace: sign in to the airlock "
                        "with your browser (an API token, which is what a workspace holds, "
                        "may not open one)"))
            if source == "load" and not user.is_staff:
                raise PermissionDenied(N_("staff-side loads are for platform staff only"))
        try:
            me = self.airlock._as_person(user).person
        except (IdentityUnavailable, PermissionDenied):
            me = user.person
        now = utcnow()
        req = ImportRequest(
            id=IMPORT_ID_PREFIX + secrets.token_hex(8), project=project, requester=user.name,
            requester_dn=me.dn, requester_uid_number=me.uid_number, source=source, code=code,
            title=title, justification=justification, state=OPEN, created_at=now,
            updated_at=now)
        with self.airlock._write_sessions() as s, s.begin():
            s.add(req)
            s.flush()
            self._audit(AuditEvent.AIRLOCK_IMPORT_CREATED, user, req, source=source,
                        code=code, title=title)
        return self.get(user, req.id)

    def list(self, user: Identity, *, state: str | None = None,
             project: str | None = None) -> list[dict[str, Any]]:
        with self.airlock.sessions() as s:
            q = select(ImportRequest).options(selectinload(ImportRequest.files)).order_by(
                ImportRequest.created_at.desc())
            if state:
                q = q.where(ImportRequest.state == state)
            if project:
                q = q.where(ImportRequest.project == project)
            out, memo = [], {}
            for r in s.scalars(q.limit(1000)):
                try:
                    self._require_view(user, r, memo)
                except (NotFound, IdentityUnavailable):
                    continue
                out.append(self._detail(r, user, memo))
            return out

    def get(self, user: Identity, import_id: Any) -> dict[str, Any]:
        with self.airlock.sessions() as s:
            req = self._load(s, import_id)
            memo: dict[str, bool] = {}
            self._require_view(user, req, memo)
            return self._detail(req, user, memo)

    # ------------------------------------------------------------ files

    def _dir(self, import_id: str) -> Path:
        return self.quarantine / import_id

    def add_file(self, user: Identity, import_id: Any, name: Any,
                 chunks: Any) -> dict[str, Any]:
        """Write a file into the quarantine, check it and record the verdict."""
        name = clean_filename(name)
        if name == MANIFEST:
            raise InvalidInput(f"filename: {MANIFEST} is the name of the manifest the "
                               "airlock writes beside the files; rename the file")
        with self._guard(user, "add_file", import_id if isinstance(import_id, str) else None):
            with self.airlock.sessions() as s:
                req = self._load(s, import_id)
                self._require_view(user, req)
                self._require_requester(user, req, "add files to")
                if any(f.name == name for f in req.files):
                    raise PolicyViolation(f"{name}: this import already has a file of that "
                                          "name (remove it first)")
                if len(req.files) >= self.conf.max_files:
                    raise PolicyViolation(f"an import holds at most {self.conf.max_files} "
                                          "files")
                code = req.code
        folder = self._dir(import_id)
        self.quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.quarantine, 0o700)
        folder.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.conf.max_file_bytes:
                        raise TooLarge(f"{name}: larger than {self.conf.max_file_bytes} bytes "
                                       "(airlock.imports.max_file_bytes)")
                    digest.update(chunk)
                    out.write(chunk)
            path = folder / secrets.token_hex(8)
            os.chmod(tmp, 0o400)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with open(path, "rb") as fh:
            verdict = check_file(fh, name, size, code=code, limits=self.limits)
        if verdict.kind == "git-bundle" and verdict.accepted:
            self.airlock.staging.prepare()
            why = self.bundle_verifier(path, self.airlock.staging.tmp)
            if why:
                verdict.reasons.append(f"{name}: {why}")
        row = ImportFile(import_id=import_id, name=name, sha256=digest.hexdigest(), size=size,
                         kind=verdict.kind[:40],
                         verdict="accepted" if verdict.accepted else "refused",
                         reasons=json.dumps(verdict.reasons), created_at=utcnow())
        with self.airlock._write_sessions() as s, s.begin():
            req = self._load(s, import_id)
            if req.state != OPEN:  # withdrawn meanwhile
                os.unlink(path)
                raise InvalidTransition(f"import request {req.id} is {req.state}")
            req.files.append(row)
            req.updated_at = utcnow()
            s.flush()
            (folder / str(row.id)).parent.mkdir(exist_ok=True)
            os.rename(path, folder / str(row.id))
            event = (AuditEvent.AIRLOCK_IMPORT_FILE_ACCEPTED if verdict.accepted
                     else AuditEvent.AIRLOCK_IMPORT_FILE_REFUSED)
            self._audit(event, user, req, outcome="success" if verdict.accepted else "denied",
                        file=name, sha256=row.sha256, size=size, kind=verdict.kind,
                        executable=sorted(set(verdict.executable)), reasons=verdict.reasons)
        return self._file(row)

    def add_path(self, user: Identity, import_id: str, path: Path,
                 name: str | None = None) -> dict[str, Any]:
        """A staff-side load of one host file (``ecluse airlock import load``)."""
        path = Path(path)
        if path.is_symlink() or not path.is_file():
            raise InvalidInput(f"{path}: not a regular file (links and folders are not "
                               "loaded; pack a folder as a tar or zip archive)")

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return self.add_file(user, import_id, name or path.name, chunks())

    def remove_file(self, user: Identity, import_id: Any, file_id: Any) -> None:
        with self._guard(user, "remove_file", import_id if isinstance(import_id, str) else None):
            with self.airlock._write_sessions() as s, s.begin():
                req = self._load(s, import_id)
                self._require_view(user, req)
                self._require_requester(user, req, "remove files of")
                row = next((f for f in req.files if str(f.id) == str(file_id)), None)
                if row is None:
                    raise NotFound(f"no file {file_id} in import request {req.id}")
                req.files.remove(row)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._dir(req.id) / str(row.id))
                self._audit(AuditEvent.AIRLOCK_IMPORT_FILE_REMOVED, user, req, file=row.name,
                            sha256=row.sha256)

    # ------------------------------------------------------------ transitions

    def submit(self, user: Identity, import_id: Any) -> dict[str, Any]:
        with self._guard(user, "submit", import_id if isinstance(import_id, str) else None):
            with self.airlock._write_sessions() as s, s.begin():
                req = self._load(s, import_id)
                self._require_view(user, req)
                self._require_requester(user, req, "submit")
                if not req.files:
                    raise PolicyViolation(f"import request {req.id} has no file")
                refused = [f.name for f in req.files if f.verdict != "accepted"]
                if refused:
                    raise PolicyViolation(
                        f"import request {req.id} holds refused files ({', '.join(refused)}): "
                        "remove them first")
                req.state, req.updated_at = SUBMITTED, utcnow()
                self._audit(AuditEvent.AIRLOCK_IMPORT_SUBMITTED, user, req,
                            files=[{"name": f.name, "sha256": f.sha256} for f in req.files])
        return self.get(user, import_id)

    def withdraw(self, user: Identity, import_id: Any) -> dict[str, Any]:
        with self._guard(user, "withdraw", import_id if isinstance(import_id, str) else None):
            with self.airlock._write_sessions() as s, s.begin():
                req = self._load(s, import_id)
                self._require_view(user, req)
                if user.name != req.requester and not user.is_staff:
                    raise PermissionDenied(f"only the requester ({req.requester}) or staff "
                                           "may withdraw this import request")
                if req.state not in (OPEN, SUBMITTED):
                    raise InvalidTransition(f"import request {req.id} is {req.state}: cannot "
                                            "withdraw")
                req.state, req.updated_at = WITHDRAWN, utcnow()
                self._audit(AuditEvent.AIRLOCK_IMPORT_WITHDRAWN, user, req)
        shutil.rmtree(self._dir(import_id), ignore_errors=True)
        return self.get(user, import_id)

    def _require_approver(self, user: Identity, req: ImportRequest) -> None:
        why = self._same_person(user, req)
        if why:
            raise PermissionDenied(
                f"you made import request {req.id} ({why}): another person — staff or a "
                f"data owner of project {req.project} — approves it")
        if user.is_staff:
            return
        if self._is_owner(user, req.project):
            return
        raise PermissionDenied(f"only staff or a data owner of project {req.project} "
                               "(its data_owner_group) may decide on its imports")

    def decide(self, user: Identity, import_id: Any, decision: Any,
               comment: Any = "") -> dict[str, Any]:
        """``approve`` (then deliver) or ``reject`` a submitted import request."""
        if decision not in ("approve", "reject"):
            raise InvalidInput(N_("decision: expected approve or reject"))
        comment = self.airlock._text(comment, "comment", required=decision == "reject")
        with self._guard(user, decision, import_id if isinstance(import_id, str) else None):
            with self.airlock._write_sessions() as s, s.begin():
                req = self._load(s, import_id)
                self._require_view(user, req)
                if req.state != SUBMITTED:
                    raise InvalidTransition(f"import request {req.id} is {req.state}: "
                                            f"cannot {decision} (only once submitted)")
                self._require_approver(user, req)
                req.state = APPROVED if decision == "approve" else REJECTED
                req.decided_by, req.decision_comment = user.name, comment
                req.updated_at = utcnow()
                event = (AuditEvent.AIRLOCK_IMPORT_APPROVED if decision == "approve"
                         else AuditEvent.AIRLOCK_IMPORT_REJECTED)
                self._audit(event, user, req, comment=comment,
                            data_owner=not user.is_staff)
        if decision == "reject":
            shutil.rmtree(self._dir(import_id), ignore_errors=True)
            return self.get(user, import_id)
        try:
            self.deliver(user.name, import_id)
        except (OSError, IntegrityFailure) as e:  # stays approved: delivered later by root
            log.error("import %s approved, not delivered: %s", import_id, e)
        return self.get(user, import_id)

    # ------------------------------------------------------------ delivery

    def inbox(self, project: str) -> Path:
        return self.projects_root / project / "inbox"

    def deliver(self, actor: str, import_id: str) -> Path:
        """Copy an approved import's files (re-hashed) to the project's inbox with their
        manifest; ``delivered``. Raises (and audits) what stops it; idempotent."""
        with self.airlock.sessions() as s:
            req = self._load(s, import_id)
            if req.state != APPROVED:
                raise InvalidTransition(f"import request {req.id} is {req.state}: only an "
                                        "approved import is delivered")
            files = [(f.id, f.name, f.sha256) for f in req.files]
            project = self.projects.get(req.project)
        gid = getattr(project, "gid", None)
        inbox = self.inbox(req.project)
        try:
            if gid is None:
                raise PermissionError(f"project {req.project} has no gid yet")
            final = write_delivery(inbox, req.id, gid, [
                (self._dir(req.id) / str(fid), name, sha) for fid, name, sha in files])
        except (OSError, IntegrityFailure) as e:
            self._audit(AuditEvent.AIRLOCK_IMPORT_DELIVERY_FAILED, actor, req,
                        outcome="error", error=f"{type(e).__name__}: {e}")
            raise
        with self.airlock._write_sessions() as s, s.begin():
            row = self._load(s, import_id)
            row.state, row.delivered_at = DELIVERED, utcnow()
            row.updated_at = row.delivered_at
            self._audit(AuditEvent.AIRLOCK_IMPORT_DELIVERED, actor, row,
                        path=f"/project/inbox/{req.id}",
                        files=[{"name": n, "sha256": h} for _, n, h in files])
        shutil.rmtree(self._dir(import_id), ignore_errors=True)
        return final

    def pending_delivery(self) -> list[str]:
        with self.airlock.sessions() as s:
            return list(s.scalars(select(ImportRequest.id).where(
                ImportRequest.state == APPROVED)))

    # ------------------------------------------------------------ views

    @staticmethod
    def _file(f: ImportFile) -> dict[str, Any]:
        return {"id": f.id, "name": f.name, "sha256": f.sha256, "size": f.size,
                "kind": f.kind, "verdict": f.verdict, "reasons": json.loads(f.reasons or "[]")}

    def _detail(self, r: ImportRequest, user: Identity,
                memo: dict[str, bool] | None = None) -> dict[str, Any]:
        actions = []
        if user.name == r.requester and r.state == OPEN:
            actions += ["add_file", "remove_file", "submit", "withdraw"]
        elif r.state == SUBMITTED:
            if user.name == r.requester or user.is_staff:
                actions.append("withdraw")
            if user.name != r.requester:
                try:
                    decider = user.is_staff or self._is_owner(user, r.project, memo)
                except IdentityUnavailable:
                    decider = False
                if decider:
                    actions += ["approve", "reject"]
        return {
            "id": r.id, "project": r.project, "requester": r.requester, "source": r.source,
            "code": r.code, "title": r.title, "justification": r.justification,
            "state": r.state, "decided_by": r.decided_by, "comment": r.decision_comment,
            "created_at": _iso(r.created_at), "updated_at": _iso(r.updated_at),
            "delivered_at": _iso(r.delivered_at),
            "inbox": f"/project/inbox/{r.id}" if r.state == DELIVERED else None,
            "files": [self._file(f) for f in r.files], "actions": actions,
        }


def write_delivery(inbox: Path, import_id: str, gid: int,
                   files: list[tuple[Path, str, str]]) -> Path:
    """Copy ``files`` (quarantine path, name, sha256 recorded at the check) into
    ``inbox/<import_id>/`` with ``MANIFEST.sha256``: files 0440, folder 0550, group ``gid``.

    As root the inbox is made (root:project 0750) and everything chowned; as the airlock's
    own user the inbox must be its own, setgid to the project's group (made so by the
    sandbox's ``prepare_inbox``), and the group of what it writes is checked. Each file is
    re-hashed while copied: a change since its check refuses the delivery. Written in a
    hidden folder first, renamed into place at the end (all or nothing)."""
    root = os.geteuid() == 0
    if root:
        inbox.mkdir(mode=0o750, parents=True, exist_ok=True)
        st = os.lstat(inbox)
        if st.st_uid == 0:
            os.chown(inbox, 0, gid)
            os.chmod(inbox, 0o750)
    final = inbox / import_id
    partial = inbox / f".{import_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(mode=0o700)
        if root:
            os.chown(partial, 0, gid)
        if os.stat(partial).st_gid != gid:
            raise PermissionError(f"{inbox} does not give its files the project's group "
                                  f"{gid} (it must be setgid and of that group)")
        lines = []
        for src, name, sha in files:
            digest = hashlib.sha256()
            dst = partial / name
            with open(src, "rb") as fi, open(dst, "xb") as fo:
                while chunk := fi.read(CHUNK):
                    digest.update(chunk)
                    fo.write(chunk)
            if digest.hexdigest() != sha:
                raise IntegrityFailure(f"{name}: its bytes in the quarantine no longer "
                                       "match the sha256 recorded when it was checked")
            if root:
                os.chown(dst, 0, gid)
            os.chmod(dst, 0o440)
            lines.append(f"{sha}  {name}\n")
        (partial / MANIFEST).write_text("".join(lines))
        if root:
            os.chown(partial / MANIFEST, 0, gid)
        os.chmod(partial / MANIFEST, 0o440)
        os.chmod(partial, 0o550)
        if os.path.lexists(final):
            raise FileExistsError(f"{final} already exists")
        os.rename(partial, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.chmod(partial, 0o700)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def _iso(value: Any) -> str | None:
    v = as_utc(value)
    return v.isoformat() if v else None


__all__ = ["DataOwners", "GitBundleVerifier", "IngressService", "Verdict"]
