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
citing the earlier request. The comparison runs where the checks run: with
``check_runner: sandbox``, in a one-shot check sandbox
(:meth:`~ecluse.airlock.checkbox.SandboxChecker.difference`) that gets the
count tables of the request's files (as the sandboxed checker extracted them)
and, mounted read-only, the ledger rows of the request's scopes only
(:func:`export`); the service applies the findings it returns
(:func:`apply`). The ledger is a table of the airlock's database: it survives
restarts and is backed up with it.
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


def export(s: Session, scopes: list[str], *,
           exclude_request: str | None = None) -> list[dict[str, Any]]:
    """The ledger rows released under ``scopes`` (one per table, whatever the scope),
    as the JSON a check sandbox reads: each table with its ``origin`` (the request,
    version, file and sha256 it was released in)."""
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
            table = json.loads(e.table)
        except ValueError:
            log.warning("ledger entry %s is unreadable: skipped", e.id)
            continue
        if isinstance(table, dict):
            out.append({**table, "origin": {"request": e.request_id, "version": e.version,
                                            "file": e.file, "sha256": e.sha256}})
    return out


def released_tables(rows: Iterable[dict[str, Any]]):  # type: ignore[no-untyped-def]
    """The :class:`~ecluse.sdc.differencing.CountTable` of each exported ledger row
    (unreadable and oversized ones skipped)."""
    from ..sdc.differencing import MAX_CELLS, CountTable  # deferred: pandas, loaded by sdc

    out = []
    for row in rows:
        try:
            t = CountTable.from_dict(row)
        except (ValueError, KeyError, TypeError):
            log.warning("ledger table of %s is unreadable: skipped", row.get("origin"))
            continue
        if len(t.cells) <= MAX_CELLS:
            t.origin = dict(row.get("origin") or {})
            out.append(t)
    return out


def _side(report: dict[str, Any]) -> dict[str, Any] | None:
    details = report.get("details") if isinstance(report, dict) else None
    side = details.get("dominance") if isinstance(details, dict) else None
    return side if isinstance(side, dict) else None


def stored_reports(req: Request) -> list[dict[str, Any]]:
    """What the set judgement reads of the current files of ``req``: each one's name,
    whether it is a supporting file, and the findings, count tables and dominance side
    (a magnitude table or its largest contributors) of its stored report (no byte of
    the file)."""
    out = []
    for f in req.current_files():
        data = f.report_dict()
        details: dict[str, Any] = {"count_tables": _tables(data)}
        if (side := _side(data)) is not None:
            details["dominance"] = side
        out.append({"name": f.name, "format": str(data.get("format") or ""),
                    "supporting": bool(f.supporting),
                    "findings": list(data.get("findings") or []), "details": details})
    return out


def _dominance_pair(files: list[dict[str, Any]]) -> bool:
    sides = [(f.get("details") or {}).get("dominance") for f in files]
    sides = [s for s in sides if isinstance(s, dict)]
    return any(s.get("total") for s in sides) and any(s.get("tops") for s in sides)


def nothing_to_compare(files: list[dict[str, Any]], released: list[dict[str, Any]]) -> bool:
    """No pair of tables to compare: no count table of a file to release, or one and no
    earlier release, and no magnitude table with its contributors in another file
    (then no sandbox is started for nothing)."""
    n = sum(len((f.get("details") or {}).get("count_tables") or []) for f in files
            if not f.get("supporting"))
    return (n == 0 or (n == 1 and not released)) and not _dominance_pair(files)


def set_finding(item: dict[str, Any]) -> bool:
    """A finding of the request's files judged together (stored by :func:`apply`, not
    by the file's own check): differencing, or dominance from another file's
    largest contributors."""
    rule = item.get("rule") if isinstance(item, dict) else None
    return rule == "differencing" or (
        rule in ("dominance-nk", "dominance-p")
        and "supporting_file" in (item.get("location") or {}))


def difference(files: list[dict[str, Any]], released: list[dict[str, Any]],
               policy: Any) -> list[list[dict[str, Any]]]:
    """The set findings (:func:`set_finding`) of each of ``files``
    (:func:`stored_reports`), judged as one set and against the ``released`` ledger
    rows (:func:`export`): differencing between the files to release (a supporting
    file's tables are never published, so never differenced) and dominance of a
    magnitude table whose largest contributors are in another file of the request.

    Pure: what a check sandbox runs (``checkjob``, kind ``difference``), and what the
    service runs itself with ``check_runner: process``."""
    from ..sdc.contributors import judge_sides  # deferred: pandas, loaded by sdc
    from ..sdc.differencing import difference_reports  # deferred: pandas, loaded by sdc
    from ..sdc.report import FileReport, Finding, Severity, Verdict  # deferred: pandas

    reports = []
    for data in files:
        details = dict(data.get("details") or {})
        if data.get("supporting"):
            details["count_tables"] = []
        rep = FileReport(path=str(data["name"]), format=str(data.get("format") or ""),
                         verdict=Verdict.REVIEW, details=details)
        for item in data.get("findings") or []:
            if isinstance(item, dict) and set_finding(item):
                continue  # judged again here
            try:
                rep.findings.append(Finding.from_dict(item))
            except (KeyError, TypeError, ValueError):
                rep.findings.append(Finding("checker-error", Severity.REVIEW,
                                            "unreadable stored finding"))
        reports.append(rep)
    difference_reports(reports, policy, released_tables(released))
    judge_sides([(rep, (data.get("details") or {}).get("dominance"))
                 for rep, data in zip(reports, files, strict=True)], policy)
    return [[d for x in rep.findings if set_finding(d := x.to_dict())] for rep in reports]


def apply(req: Request, found: list[list[dict[str, Any]]]) -> None:
    """Store the ``differencing`` findings ``found`` (one list per current file of
    ``req``, in order) in each file's report, and the verdict they give it."""
    from ..sdc.report import Severity, Verdict  # deferred: pandas, loaded by sdc

    files = req.current_files()
    if not isinstance(found, list) or len(found) != len(files):
        raise ValueError(f"differencing gave {len(found) if isinstance(found, list) else '?'} "
                         f"results for {len(files)} files")
    for f, added in zip(files, found, strict=True):
        data = f.report_dict()
        before = [x for x in data.get("findings") or [] if not set_finding(x)]
        old = [x for x in data.get("findings") or [] if set_finding(x)]
        added = [x for x in added if isinstance(x, dict) and set_finding(x)]
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
