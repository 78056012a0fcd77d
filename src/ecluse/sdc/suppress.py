"""Suggested fixes: a version of a ``fail`` table that passes.

``ecluse check --fix OUT`` (and the airlock's proposal) rewrites a count table
read from a CSV file in one of two ways, with a note of every change:

* **suppress** — primary suppression of every count below the threshold (and
  of zeros when the policy finds them disclosive), then secondary suppression:
  while a hidden cell is still determined exactly by the cells shown (through
  the table's totals and margins, solved as a linear system, see
  :class:`~ecluse.sdc.differencing.TableSystem`), the smallest shown cell whose
  hiding makes it undetermined is hidden too (totals last). Each subtotal is the
  sum of the rows listed under it, also over several label columns (districts
  nested in regions: a region's subtotal covers its own districts only);
* **round** — every count to the nearest multiple of the policy's
  ``rounding_base`` (halves up), then the suppression above for the counts that
  are still below the threshold.

Hidden cells are written as ``c`` (the ONS convention). The fixed table is
checked again; :func:`fix_csv` returns that report with the note.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .analyze import analyze_table
from .check import check_file
from .differencing import ALL, CountTable, TableSystem, describe, extract
from .policy import DisclosurePolicy
from .report import FileReport
from .sniff import sniff
from .table import detect_decimal_comma, grid_to_table

#: what a suppressed cell is written as
MARK = "c"
METHODS = ("suppress", "round")


class CannotFix(ValueError):
    """The file is not a count table this module can rewrite (the message says why)."""


@dataclass
class Fix:
    """The rewritten table (CSV text), what changed, and the re-check of the result."""

    text: str
    method: str
    notes: list[str] = field(default_factory=list)
    report: FileReport | None = None

    def to_dict(self) -> dict:
        return {"method": self.method, "notes": list(self.notes),
                "verdict": str(self.report.verdict) if self.report else None}


def _read(text: str, sep: str, policy: DisclosurePolicy):  # type: ignore[no-untyped-def]
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    t = grid_to_table(rows, decimal_comma=detect_decimal_comma(rows[:200], sep))
    if t is None:
        raise CannotFix("the file holds no table")
    fs, prof = analyze_table(t, policy)
    if prof.blocked:
        raise CannotFix("the file holds row-level data: no fix makes it releasable")
    ct = extract(t, prof.label_cols, prof.count_cols)
    if ct is None:
        raise CannotFix("no count table with label columns was found (one cell per row "
                        "and count column, each label combination once)")
    return rows, t, prof, ct


def _where(ct: CountTable, k: int) -> str:
    key, _ = ct.cells[k]
    return describe({d: v for d, v in zip(ct.dims, key, strict=True) if v != ALL})


def suppress(ct: CountTable, policy: DisclosurePolicy) -> tuple[list[int], list[int]]:
    """Primary and secondary cells to hide (indices into ``ct.cells``)."""
    thr = policy.threshold
    primary = [k for k, (_, v) in enumerate(ct.cells) if v is not None and (
        0 < v < thr or (v == 0 and policy.zeros_disclosive))]
    already = [k for k, (_, v) in enumerate(ct.cells) if v is None]
    hidden = set(primary) | set(already)
    if not hidden:
        return [], []
    system = TableSystem(ct)
    secondary: list[int] = []

    def order(k: int) -> tuple[bool, float]:
        key, v = ct.cells[k]
        return (ALL in key, float(v or 0))

    while True:
        det = system.determined(hidden)
        if not det:
            break
        target = det[0]
        shown = sorted((k for k in range(len(ct.cells)) if k not in hidden), key=order)
        pick = next((k for k in shown if target not in system.determined(hidden | {k})),
                    shown[0] if shown else None)
        if pick is None:  # pragma: no cover - nothing shown determines nothing
            break
        hidden.add(pick)
        secondary.append(pick)
    return primary, secondary


def _round(v: float, base: int) -> int:
    return int((v + base / 2) // base * base)


def fix_text(text: str, sep: str, policy: DisclosurePolicy, method: str = "suppress") -> Fix:
    """Fix the CSV ``text``; raises :class:`CannotFix` when it is not a count table."""
    if method not in METHODS:
        raise CannotFix(f"unknown fix method {method!r} (known: {', '.join(METHODS)})")
    notes: list[str] = []
    rows, t, prof, ct = _read(text, sep, policy)
    if method == "round":
        base = policy.rounding_base
        changed = 0
        for j in prof.count_cols:
            for i in range(len(t.body)):
                r, c = t.rownums[i] - 1, t.colnums[j]
                v = ct.cells[prof.count_cols.index(j) * len(t.body) + i][1]
                if v is not None and _round(v, base) != v:
                    rows[r][c] = str(_round(v, base))
                    changed += 1
        notes.append(f"rounded {changed} count(s) to the nearest multiple of {base}")
        rows, t, prof, ct = _read(_write(rows, sep), sep, policy)
    primary, secondary = suppress(ct, policy)
    n = len(t.body)
    for k in primary + secondary:
        jpos, i = divmod(k, n)
        rows[t.rownums[i] - 1][t.colnums[prof.count_cols[jpos]]] = MARK
    if primary:
        notes.append(f"suppressed {len(primary)} cell(s) below the threshold {policy.threshold}"
                     f" (primary): " + "; ".join(_where(ct, k) for k in primary[:20]))
    if secondary:
        notes.append(f"suppressed {len(secondary)} more cell(s) so that no suppressed cell can "
                     "be recomputed from the totals (secondary): "
                     + "; ".join(_where(ct, k) for k in secondary[:20]))
    if not primary and not secondary and method == "suppress":
        notes.append("no count below the threshold: nothing suppressed")
    return Fix(text=_write(rows, sep), method=method, notes=notes)


def _write(rows: list[list[str]], sep: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\n").writerows(rows)
    return out.getvalue()


def fix_csv(path: str | Path, out: str | Path, policy: DisclosurePolicy | None = None,
            method: str = "suppress") -> Fix:
    """Write the fixed version of the CSV ``path`` to ``out`` and check it again."""
    policy = policy or DisclosurePolicy()
    path = Path(path)
    sn = sniff(path)
    if sn.format != "csv":
        raise CannotFix(f"{path.name}: only CSV tables can be fixed (this is {sn.format})")
    fix = fix_text(path.read_bytes().decode(sn.encoding or "utf-8"), sn.sep, policy, method)
    Path(out).write_text(fix.text, encoding="utf-8")
    fix.report = check_file(out, policy)
    return fix
