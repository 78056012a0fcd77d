"""ACRO interoperability: read ACRO's ``results.json``, write results in its format.

ACRO (the SACRO project's output checker, https://github.com/AI-SDC/ACRO) ends a
researcher's session with ``acro.finalise(path, "json")``: a folder with the
outputs and a ``results.json`` of this shape (ACRO ``record.py``)::

    {"version": "0.4.x",
     "results": {"output_0": {"uid": "output_0", "status": "fail" | "review" | "pass",
                              "type": "table", "properties": {...},
                              "files": [{"name": "output_0_0.csv", "sdc": {...}}],
                              "outcome": {...}, "command": "...", "summary": "...",
                              "timestamp": "...", "comments": ["..."],
                              "exception": "why the researcher asks for release"}},
     "session_summary": {...}}

:func:`load_results` validates such a file and fails closed (:class:`AcroError`)
on anything else; :func:`attach` puts ACRO's verdict, summary and the
researcher's exception beside Écluse's own findings in each file's report.
:func:`to_acro` writes an Écluse report in the same format, so SACRO-Viewer can
open it. Nothing of ACRO's code is used.
"""

from __future__ import annotations

import datetime
import json
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .report import FileReport, Report, Verdict
from .rules import finding

#: the file name ACRO writes
RESULTS_NAME = "results.json"
#: largest results.json read
MAX_RESULTS_BYTES = 64 * 1024 * 1024


class AcroError(ValueError):
    """A results.json that is not ACRO's format (the message says where)."""


class _Model(BaseModel):
    # ACRO adds keys between versions: unknown keys are kept, known ones are checked
    model_config = ConfigDict(extra="allow")


class AcroFile(_Model):
    name: str = Field(min_length=1)
    sdc: dict[str, Any] = Field(default_factory=dict)


class AcroOutput(_Model):
    uid: str = Field(min_length=1)
    status: Literal["pass", "fail", "review"]
    type: str
    properties: dict[str, Any] = Field(default_factory=dict)
    files: list[AcroFile]
    outcome: dict[str, Any] = Field(default_factory=dict)
    command: str = ""
    summary: str = ""
    timestamp: str = ""
    comments: list[str] = Field(default_factory=list)
    exception: str = ""


class AcroResults(_Model):
    version: str
    results: dict[str, AcroOutput]


def is_acro_results(path: Path) -> bool:
    """``results.json`` whose top level has ACRO's two keys (cheap: no validation)."""
    if path.name != RESULTS_NAME or not path.is_file():
        return False
    try:
        if path.stat().st_size > MAX_RESULTS_BYTES:
            return True  # too large to look at: load_results says so
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "version" in doc and "results" in doc


def load_results(path: Path) -> AcroResults:
    """Read and validate ACRO's results.json; :class:`AcroError` on anything malformed."""
    try:
        size = path.stat().st_size
        if size > MAX_RESULTS_BYTES:
            raise AcroError(f"{path.name}: {size} bytes, more than {MAX_RESULTS_BYTES}: not read")
        doc = json.loads(path.read_bytes())
    except OSError as e:
        raise AcroError(f"{path.name}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise AcroError(f"{path.name}: not JSON: {e}") from None
    try:
        res = AcroResults.model_validate(doc)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'top level'}: {err['msg']}"
                          for err in e.errors()[:5])
        raise AcroError(f"{path.name} is not ACRO's results.json: {where}") from None
    for key, out in res.results.items():
        if key != out.uid:
            raise AcroError(f"{path.name}: output {key!r} carries uid {out.uid!r}")
        for f in out.files:
            p = PurePosixPath(f.name)
            if p.is_absolute() or ".." in p.parts:
                raise AcroError(f"{path.name}: output {key!r} names a file outside its "
                                f"folder: {f.name!r}")
    return res


def judge_results_file(path: Path, report: FileReport) -> None:
    """When ``path`` is ACRO's results.json, validate it into ``report``.

    A valid one keeps its outputs' judgements in ``details.acro_results`` (what
    :func:`entries_by_file` reads, so nobody reads the file again) and is
    ``free-text``: its commands, comments and exceptions are read by a person. A
    malformed one gets a ``reader-error`` saying what is wrong."""
    if not is_acro_results(path):
        return
    try:
        results = load_results(path)
    except AcroError as e:
        report.findings.append(finding("reader-error", str(e)))
    else:
        report.details["acro_results"] = {
            out.uid: {"status": out.status, "type": out.type, "command": out.command[:2000],
                      "summary": out.summary[:2000], "exception": out.exception[:4000],
                      "comments": [c[:2000] for c in out.comments[:50]],
                      "files": [f.name for f in out.files]}
            for out in results.results.values()}
        # its lists of files and cells are no table to judge
        report.findings = [f for f in report.findings if f.rule != "ambiguous-layout"]
        report.findings.append(finding("free-text", "ACRO's results.json: its commands, "
                                       "comments and exception requests are read by a person"))
    report.verdict = FileReport.verdict_of(report.findings)


def entries_by_file(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """ACRO's judgements by the bare file name they are about, from the reports (as
    dicts) of the results.json files among ``reports``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rep in reports:
        outputs = (rep.get("details") or {}).get("acro_results") or {}
        for uid, o in outputs.items():
            for name in o.get("files", []):
                out.setdefault(PurePosixPath(name).name, []).append(
                    {"results": rep.get("path", RESULTS_NAME), "output": uid,
                     **{k: v for k, v in o.items() if k != "files"}})
    return out


def attach(report: Report) -> None:
    """Show ACRO's judgement of each output beside Écluse's, on the file it names.

    A ``fail`` or ``review`` from ACRO adds an ``acro-outcome`` finding (review: a
    person reads ACRO's reasons and the researcher's exception); a ``pass`` adds an
    ``acro-pass`` note. ACRO never makes a file pass: Écluse's own findings stay."""
    entries = entries_by_file([fr.to_dict() for fr in report.files])
    for fr in report.files:
        name = PurePosixPath(fr.path).name
        if name == RESULTS_NAME:
            continue
        for entry in entries.get(name, []):
            fr.details.setdefault("acro", []).append(entry)
            status, summary = entry["status"], entry["summary"].strip()
            msg = f"ACRO judged output {entry['output']} {status}"
            if summary and summary != status:
                msg += f" ({summary})"
            if entry["exception"]:
                msg += f"; the researcher asks for an exception: {entry['exception'].strip()}"
            if status == "pass":
                fr.findings.append(finding("acro-pass", msg[:1000], acro_output=entry["output"]))
            else:
                fr.findings.append(finding("acro-outcome", msg[:1000],
                                           acro_output=entry["output"]))
            fr.verdict = FileReport.verdict_of(fr.findings)


# ---------------------------------------------------------------- writing

#: Écluse rule -> the key of ACRO's ``sdc`` cell lists it corresponds to
_ACRO_CHECK = {
    "small-count": "threshold",
    "small-n-statistic": "threshold",
    "zero-count": "threshold",
    "dominance-nk": "nk-rule",
    "dominance-p": "p-ratio",
    "recoverable-suppression": "threshold",
}
_ACRO_KEYS = ("negative", "missing", "threshold", "p-ratio", "nk-rule", "all-values-are-same")
_TABLE_FORMATS = {"csv", "parquet", "arrow", "excel", "json", "jsonl", "html", "dataframe"}


def _status(v: Verdict) -> str:
    # ACRO has no "block": row-level data is a fail there too
    return {"pass": "pass", "review": "review"}.get(str(v), "fail")


def _name(path: str, root: Path | None) -> str:
    """A file's name as ACRO records it: relative to the results folder."""
    p = Path(path)
    if root is not None and p.is_absolute():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return p.name if p.is_absolute() or ".." in p.parts else p.as_posix()


def to_acro(report: Report, *, version: str | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """An Écluse report in ACRO's ``results.json`` format, one output per file.

    Cells Écluse flags go in ``sdc.cells`` under ACRO's check names (``threshold``,
    ``p-ratio``, ``nk-rule``) as ``[row, column]``: the row is the file's line
    number and the column its header, as in Écluse's own findings. Every finding,
    whatever its rule, is also a line of ``comments``. File names are relative to
    ``root`` (the folder of the results file) when under it, else bare names."""
    if version is None:
        try:
            version = f"ecluse-{dist_version('ecluse')}"
        except PackageNotFoundError:  # pragma: no cover - a source checkout
            version = "ecluse"
    now = datetime.datetime.now(datetime.UTC).isoformat()
    results: dict[str, Any] = {}
    for k, fr in enumerate(report.files):
        uid = f"output_{k}"
        cells: dict[str, list] = {key: [] for key in _ACRO_KEYS}
        outcome: dict[str, dict[str, str]] = {}
        for f in fr.findings:
            check = _ACRO_CHECK.get(f.rule)
            loc = f.location
            if check and "row" in loc and "column" in loc:
                cells[check].append([loc["row"], loc["column"]])
                col = outcome.setdefault(str(loc["column"]), {})
                col[str(loc["row"])] = col.get(str(loc["row"]), "") + f"{check}; "
        counts = {key: len(v) for key, v in cells.items()}
        status = _status(fr.verdict)
        rules = sorted({f.rule for f in fr.findings if str(f.severity) != "info"})
        summary = f"{status}; " + "; ".join(rules) + ("; " if rules else "")
        results[uid] = {
            "uid": uid,
            "status": status,
            "type": "table" if fr.format in _TABLE_FORMATS else "custom",
            "properties": {"method": "ecluse check", "format": fr.format,
                           "ecluse_verdict": str(fr.verdict),
                           "policy_pack": fr.policy.get("pack", "")},
            "files": [{"name": _name(fr.path, root),
                       "sdc": {"summary": {"suppressed": False, **counts},
                               "cells": cells}}],
            "outcome": outcome,
            "command": "ecluse check",
            "summary": summary,
            "timestamp": now,
            "comments": [f"{f.severity}: {f.rule}: {f.message}" for f in fr.findings][:200],
            "exception": "",
        }
    return {"version": version, "results": results}


def write_acro(report: Report, out: Path) -> None:
    """Write :func:`to_acro` to ``out`` (a file, or ``results.json`` in a folder)."""
    if out.is_dir():
        out = out / RESULTS_NAME
    doc = to_acro(report, root=out.parent)
    out.write_text(json.dumps(doc, indent=4, ensure_ascii=False, default=str))
