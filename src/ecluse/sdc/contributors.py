"""Dominance when the largest contributors come in a supporting file of the request.

A magnitude table (a ``total`` per group: turnover, costs, prescriptions) is
safe only if no one contributor makes most of a total. Researchers often give
the checker the largest contributors in a separate file (``sector, top1,
top2``) rather than in the table that will be published. When the files
checked together hold such a pair — one with a total column and no contributor
columns, one with contributor columns and no total, sharing label columns —
the groups are matched on those labels and the N-k and p% rules run on the
magnitude table, naming the supporting file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .analyze import _TOP_RE, _TOTAL_VALUE, _dominance
from .detect import normalise
from .policy import DisclosurePolicy
from .report import FileReport
from .table import from_frame, parse_numbers

#: largest file read again to match contributors (bytes)
MAX_BYTES = 4 * 1024 * 1024


#: most rows of a table kept in a report as a dominance side (the airlock judges the
#: files of a request from their stored reports, :func:`side_of`)
MAX_SIDE_ROWS = 5000


@dataclass
class _Side:
    report: FileReport
    frame: pd.DataFrame
    labels: dict[str, str]  # normalised name -> column
    tops: dict[int, str]
    total: str | None


def _read(path: Path, report: FileReport) -> _Side | None:
    if report.verdict == "block" or report.format not in ("csv", "parquet"):
        return None
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        if report.format == "csv":
            df = pd.read_csv(path, sep=None, engine="python", dtype=str)
        else:
            df = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - the file's own report already says what is wrong
        return None
    return _side(report, df)


def _side(report: FileReport, df: pd.DataFrame) -> _Side | None:
    tops: dict[int, str] = {}
    total = None
    labels: dict[str, str] = {}
    for c in df.columns:
        norm = normalise(c)
        m = _TOP_RE.match(norm)
        if m:
            tops.setdefault(int(m.group(1)), str(c))
        elif norm in _TOTAL_VALUE and total is None:
            total = str(c)
        elif parse_numbers(df[c]).notna().mean() < 0.9:
            labels[norm] = str(c)
    if not labels:
        return None
    return _Side(report, df, labels, tops, total)


def _magnitude(s: _Side) -> bool:
    return s.total is not None and not s.tops


def _contributors(s: _Side) -> bool:
    return bool(s.tops) and s.total is None and 1 in s.tops


def side_of(path: Path, report: FileReport) -> dict | None:
    """What :func:`judge_sides` needs of one file, as JSON (``None``: neither a magnitude
    table nor a table of largest contributors): its label columns, its total or
    contributor columns, and their values as text. Kept in the file's report
    (``details.dominance``) so that files checked one at a time — the airlock's —
    can be matched later without reading them again."""
    side = _read(path, report)
    if side is None or not (_magnitude(side) or _contributors(side)):
        return None
    if len(side.frame) > MAX_SIDE_ROWS:
        return None
    cols = [*side.labels.values(), *([side.total] if side.total else []),
            *(side.tops[k] for k in sorted(side.tops))]
    frame = side.frame[cols].astype(object).where(side.frame[cols].notna(), None)
    return {"labels": side.labels, "total": side.total,
            "tops": {str(k): v for k, v in side.tops.items()},
            "columns": cols, "rows": [[None if v is None else str(v) for v in row]
                                      for row in frame.itertuples(index=False, name=None)]}


def _from_dict(report: FileReport, data: dict) -> _Side | None:
    try:
        cols = [str(c) for c in data["columns"]]
        df = pd.DataFrame([list(r) for r in data["rows"]], columns=cols, dtype=object)
        labels = {str(k): str(v) for k, v in dict(data["labels"]).items()}
        tops = {int(k): str(v) for k, v in dict(data.get("tops") or {}).items()}
        total = str(data["total"]) if data.get("total") else None
    except (KeyError, TypeError, ValueError):
        return None
    if not labels or not set(labels.values()) | set(tops.values()) <= set(cols):
        return None
    return _Side(report, df, labels, tops, total)


def judge_supporting_contributors(files: list[tuple[Path, FileReport]],
                                  policy: DisclosurePolicy) -> None:
    """Run the dominance rules on each magnitude table whose contributors are in another
    of ``files``; findings go to the magnitude table's report."""
    _judge([s for p, r in files if (s := _read(p, r)) is not None], policy)


def judge_sides(files: list[tuple[FileReport, dict | None]],
                policy: DisclosurePolicy) -> None:
    """:func:`judge_supporting_contributors` on the stored sides (:func:`side_of`) of
    files checked one at a time; findings go to the magnitude table's report."""
    _judge([s for r, d in files if isinstance(d, dict) and (s := _from_dict(r, d))], policy)


def _judge(sides: list[_Side], policy: DisclosurePolicy) -> None:
    totals = [s for s in sides if _magnitude(s)]
    contribs = [s for s in sides if _contributors(s)]
    for mag in totals:
        for con in contribs:
            shared = sorted(set(mag.labels) & set(con.labels))
            if not shared:
                continue
            left = mag.frame.rename(columns={mag.labels[k]: k for k in shared})
            right = con.frame.rename(columns={con.labels[k]: k for k in shared})
            right = right[shared + [con.tops[k] for k in sorted(con.tops)]]
            if right.duplicated(shared).any():
                continue  # several rows per group: not one group's largest contributors
            merged = left[shared + [mag.total]].merge(right, on=shared, how="left")
            t = from_frame(merged, first_row=2,
                           base={"supporting_file": con.report.path})
            num = {j: parse_numbers(t.body[j]) for j in range(len(t.names))}
            tops = {k: len(shared) + 1 + i for i, k in enumerate(sorted(con.tops))}
            found = _dominance(t, policy, tops, len(shared), num, list(range(len(shared))))
            for f in found:
                f.message += f" (largest contributors from {con.report.path})"
                if "column" in f.location:
                    f.location["column"] = mag.total
            mag.report.findings.extend(found)
            mag.report.verdict = FileReport.verdict_of(mag.report.findings)
