"""Check before export: a real request's checks on files the airlock keeps nowhere.

``POST /api/v1/check?project=<slug>`` (:class:`~.web.api.CheckHandler`, issue 22
item 3) streams one or more files into a private folder of the staging area's
``tmp/`` (:class:`DryRunFiles`, never into the objects), then :func:`dry_run`
judges them exactly as files added to one request of that project would be:

* each file by the service's own checker (``check_runner``: a one-shot check
  sandbox per file, or the process pool) under the project's disclosure policy;
* the files as one set and against the ledger of the project's scopes (released
  tables: differencing, dominance from another file's contributors), through
  the service's ``differ`` (the check sandbox given the ledger rows read-only) and
  :func:`.ledger.apply` — the very functions a request's files go through.

It returns each file's verdict, findings (with their cell positions) and preview,
and keeps nothing: no staged object, no request, no ledger row; the folder is
removed when the call ends, whatever happens. The dry run is audited
(``airlock.check.dry_run``) with the project, the files' names, sizes, sha256
and verdicts, never their content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..auditevents import AuditEvent
from . import ledger
from .errors import InvalidInput, PermissionDenied, QuotaExceeded, TooLarge
from .permissions import Identity, require_create
from .rules import EVENTS
from .storage import clean_filename

log = logging.getLogger(__name__)

#: the audit event of a dry run (no content: names, sizes, sha256, verdicts)
DRY_RUN_EVENT = AuditEvent.AIRLOCK_CHECK_DRY_RUN


@dataclass
class _Held:
    """One dry-run file as :func:`.ledger.apply` sees a request's file (its report)."""

    name: str
    report: str
    verdict: str
    supporting: bool = False

    def report_dict(self) -> dict[str, Any]:
        return json.loads(self.report)


@dataclass
class _Set:
    """The dry run's files as :func:`.ledger.apply` sees a request (its current files)."""

    files: list[_Held] = field(default_factory=list)

    def current_files(self) -> list[_Held]:
        return self.files


class DryRunFiles:
    """The files of one dry run, streamed to a private folder of the staging area's
    ``tmp/`` (0700, the service's own): at most ``max_files`` files of at most
    ``max_bytes`` each, and at most ``room`` bytes in all (what is left of the
    user's staging quota: the bytes sit in the staging area while they are
    checked, as an upload's do). :meth:`discard` removes the folder (always
    called: the handler's end, an error, a closed connection)."""

    def __init__(self, tmp_dir: Path, *, max_files: int, max_bytes: int,
                 room: int | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dryrun-", dir=tmp_dir))
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.room = room
        self.total = 0
        #: (clean name, path, size, sha256) of each finished file
        self.files: list[tuple[str, Path, int, str]] = []
        self._fh: Any = None
        self._name = ""
        self._size = 0
        self._hash: Any = None

    def begin(self, filename: Any) -> str:
        """Start the next file; its clean name."""
        self.end()
        name = clean_filename(filename)
        if any(n == name for n, *_ in self.files):
            raise InvalidInput(f"file: {name} is given twice (one file of each name)")
        if len(self.files) >= self.max_files:
            raise InvalidInput(f"file: at most {self.max_files} files in one check (as in one "
                               "request)")
        path = self.folder / str(len(self.files))
        self._fh = open(path, "xb")  # noqa: SIM115 - closed in end() or discard()
        os.chmod(path, 0o600)
        self._name, self._size, self._hash = name, 0, hashlib.sha256()
        return name

    def write(self, data: bytes) -> None:
        if self._fh is None:
            return
        self._size += len(data)
        self.total += len(data)
        if self._size > self.max_bytes:
            self.discard()
            raise TooLarge(f"file: larger than the limit of {self.max_bytes} bytes")
        if self.room is not None and self.total > self.room:
            self.discard()
            raise QuotaExceeded(
                f"the files to check are larger than the {max(self.room, 0)} bytes left in "
                "your staging quota (they are held there while they are checked, as an "
                "upload is); nothing of them was kept. Check fewer or smaller files, or free "
                "space by withdrawing a draft you no longer need.")
        self._hash.update(data)
        self._fh.write(data)

    def end(self) -> None:
        """Finish the current file (if any)."""
        if self._fh is None:
            return
        path = Path(self._fh.name)
        self._fh.close()
        self._fh = None
        self.files.append((self._name, path, self._size, self._hash.hexdigest()))

    def discard(self) -> None:
        """Remove every byte received (idempotent)."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # pragma: no cover - closing a local file
                pass
            self._fh = None
        shutil.rmtree(self.folder, ignore_errors=True)


def require_dry_run(service: Any, user: Identity, project: Any) -> str:
    """A dry run for ``project`` is allowed (a member, with a token that acts for it);
    refusals audited like any other airlock refusal."""
    if not isinstance(project, str) or not project:
        raise InvalidInput("project: missing (?project=<slug>, the project whose policy and "
                           "releases the files are checked against)")
    try:
        require_create(user, project, project in service.projects)
    except PermissionDenied as e:
        service._audit(EVENTS["denied"], user, None, outcome="denied", action="dry_run",
                       reason=str(e), project=project)
        raise
    return project


def _inspect(service: Any, path: Path, name: str, policy: Any) -> dict[str, Any]:
    """What the service's checker makes of a file under ``name`` (fail closed), as
    :meth:`~.service.AirlockService._inspect` normalises it for a request's file."""
    report, preview, proposal = service.inspect_path(path, name, policy)
    return {"report": report, "preview": preview, "proposal": proposal}


def dry_run(service: Any, user: Identity, project: str,
            files: list[tuple[str, Path, int, str]]) -> dict[str, Any]:
    """Judge ``files`` ((name, path, size, sha256) each) as the files of one new request
    of ``project``: the same checker, policy and ledger. Keeps nothing (the caller
    removes the bytes); audits the dry run without content."""
    project = require_dry_run(service, user, project)
    if not files:
        raise InvalidInput("file: no file to check (send one or more file parts)")
    policy = service.policy_for(project)
    inspected = [_inspect(service, path, name, policy) for name, path, _, _ in files]
    held = _Set([_Held(name, json.dumps(x["report"], default=str), x["report"]["verdict"])
                 for (name, *_), x in zip(files, inspected, strict=True)])
    scopes = ledger.scopes_of(project, service._project(project))
    with service.sessions() as s:
        released = ledger.export(s, scopes)
    stored = [{"name": h.name, "format": str(x["report"].get("format") or ""),
               "supporting": False, "findings": list(x["report"].get("findings") or []),
               "details": _details(x["report"])} for h, x in zip(held.files, inspected,
                                                                  strict=True)]
    try:
        found = [[] for _ in stored] if ledger.nothing_to_compare(stored, released) else \
            service.differ(stored, released, policy, service.staging.tmp)
        ledger.apply(held, found)
    except Exception as e:
        log.exception("dry-run differencing for %s failed", project)
        ledger.unchecked(held, "differencing against the other files and earlier releases "
                         f"failed ({type(e).__name__}); review by hand")
    out = []
    for (name, _, size, sha), h, x in zip(files, held.files, inspected, strict=True):
        report = h.report_dict()
        item = {"name": name, "size": size, "sha256": sha, "verdict": h.verdict,
                "format": report.get("format"), "findings": report.get("findings") or [],
                "preview": x["preview"]}
        if x["proposal"] is not None and h.verdict == "fail":
            item["proposal"] = {k: v for k, v in x["proposal"].items() if k != "text"}
        out.append(item)
    service._audit(DRY_RUN_EVENT, user, None, project=project,
                   files=[{"name": i["name"], "size": i["size"], "sha256": i["sha256"],
                           "verdict": i["verdict"]} for i in out],
                   ledger_tables=len(released))
    return {"project": project, "kept": False, "files": out}


def _details(report: dict[str, Any]) -> dict[str, Any]:
    details = report.get("details") if isinstance(report.get("details"), dict) else {}
    out: dict[str, Any] = {"count_tables": [t for t in details.get("count_tables") or []
                                            if isinstance(t, dict)]}
    if isinstance(details.get("dominance"), dict):
        out["dominance"] = details["dominance"]
    return out
