"""The ledger of released tables: differencing across releases (issue 20 item 2).

When a request is released, the count tables its checked files hold (groups,
counts — ``details.count_tables`` of each file's report — and the file's
sha256) enter ``airlock_ledger``, once per *scope*: each dataset the project
reads, by its host path (``dataset:/srv/extracts/pmsi-2024``), so that two
projects on the same extract share their releases; a project without
datasets is a scope of its own (``project:<slug>``). Only released versions
enter it; a withdrawn, rejected or still open request never does.

Whenever the files of an open request change, and when it is submitted, its
tables are compared (:func:`ecluse.sdc.differencing.difference_reports`) with
each other and with the ledger of its scopes: a small group recovered from an
earlier release plus the new output fails (``differencing``), the finding
citing the earlier request. The comparison reads the count tables the
sandboxed checker extracted (JSON numbers and labels), never a researcher's
file: the ledger never enters a check sandbox and no released table is shown
to a process that parses untrusted files. The ledger is a table of the
airlock's database: it survives restarts and is backed up with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import File, LedgerEntry, Request, utcnow

log = logging.getLogger(__name__)

#: longest scope string kept (a dataset's host path)
MAX_SCOPE = 600


def scopes_of(slug: str, project: Any) -> list[str]:
    """The ledger scopes of a project: its datasets by host path, else the project."""
    out = []
    for ds in getattr(project, "datasets", None) or []:
        path = getattr(ds, "path", None)
        if path:
            out.append(f"dataset:{Path(str(path)).resolve()}"[:MAX_SCOPE])
    return sorted(set(out)) or [f"project:{slug}"]


def _tables(report: dict[str, Any]) -> list[dict[str, Any]]:
    details = report.get("details") if isinstance(report, dict) else None
    tables = details.get("count_tables") if isinstance(details, dict) else None
    return [t for t in tables if isinstance(t, dict)] if isinstance(tables, list) else []


def record_release(s: Session, req: Request, files: Iterable[File], scopes: list[str]) -> int:
    """Enter the count tables of the released ``files`` in the ledger; how many."""
    now = utcnow()
    n = 0
    for f in files:
        for table in _tables(f.report_dict()):
            table = {**table, "source": f.name}
            for scope in scopes:
                s.add(LedgerEntry(scope=scope, request_id=req.id, version=req.version,
                                  project=req.project, file=f.name, sha256=f.sha256,
                                  table=json.dumps(table), released_at=now))
                n += 1
    return n


def released_tables(s: Session, scopes: list[str], *, exclude_request: str | None = None):  # type: ignore[no-untyped-def]
    """The count tables released under ``scopes`` (one per table, whatever the scope)."""
    from ..sdc.differencing import MAX_CELLS, CountTable  # deferred: pandas, loaded by sdc

    q = select(LedgerEntry).where(LedgerEntry.scope.in_(scopes))
    if exclude_request:
        q = q.where(LedgerEntry.request_id != exclude_request)
    out, seen = [], set()
    for e in s.scalars(q.order_by(LedgerEntry.id)):
        key = (e.request_id, e.version, e.file, e.table)
        if key in seen:
            continue
        seen.add(key)
        try:
            t = CountTable.from_dict(json.loads(e.table))
        except (ValueError, KeyError, TypeError):
            log.warning("ledger entry %s is unreadable: skipped", e.id)
            continue
        if len(t.cells) > MAX_CELLS:
            continue
        t.origin = {"request": e.request_id, "version": e.version, "file": e.file,
                    "sha256": e.sha256}
        out.append(t)
    return out


def check_request(s: Session, req: Request, policy: Any, scopes: list[str]) -> None:
    """Judge the current files of ``req`` as one set and against the ledger (in place:
    each file's stored report and verdict get their ``differencing`` findings)."""
    from ..sdc.differencing import difference_reports  # deferred: pandas, loaded by sdc
    from ..sdc.report import FileReport, Finding, Severity, Verdict  # deferred: pandas

    files = req.current_files()
    if not files:
        return
    reports, raw = [], []
    for f in files:
        data = f.report_dict()
        raw.append(data)
        rep = FileReport(path=f.name, format=str(data.get("format") or ""),
                         verdict=Verdict.REVIEW, details=dict(data.get("details") or {}))
        for item in data.get("findings") or []:
            try:
                rep.findings.append(Finding.from_dict(item))
            except (KeyError, TypeError, ValueError):
                rep.findings.append(Finding("checker-error", Severity.REVIEW,
                                            "unreadable stored finding"))
        reports.append(rep)
    released = released_tables(s, scopes, exclude_request=req.id)
    difference_reports(reports, policy, released)
    for f, data, rep in zip(files, raw, reports, strict=True):
        before = [x for x in data.get("findings") or [] if x.get("rule") != "differencing"]
        added = [x.to_dict() for x in rep.findings if x.rule == "differencing"]
        old = [x for x in data.get("findings") or [] if x.get("rule") == "differencing"]
        if added == old:
            continue
        data["findings"] = before + added
        # the verdict of the file's own check, kept the first time the set changes it
        base = data.setdefault("checked_verdict", str(data.get("verdict") or f.verdict))
        worst = Verdict.worst([Verdict(base) if base in set(Verdict) else Verdict.REVIEW,
                               *(Severity(x["severity"]).verdict for x in added)])
        data["verdict"] = str(worst)
        f.report = json.dumps(data, default=str)
        f.verdict = data["verdict"]


def unchecked(req: Request, message: str) -> None:
    """Differencing could not run: every current file goes to ``review`` with ``message``."""
    for f in req.current_files():
        data = f.report_dict()
        data["findings"] = [x for x in data.get("findings") or []
                            if x.get("rule") != "differencing"] + [
            {"rule": "differencing", "severity": "review", "message": message, "location": {}}]
        if f.verdict == "pass":
            data["checked_verdict"] = data.get("checked_verdict", "pass")
            f.verdict = data["verdict"] = "review"
        f.report = json.dumps(data, default=str)
