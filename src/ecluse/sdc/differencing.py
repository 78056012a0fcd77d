"""Differencing: a small cell no table publishes, recovered by subtracting tables that do.

Every count table the checker judges is also kept as a :class:`CountTable`:
its dimensions (the label columns, and the header of a crosstab), its cells
(``"*"`` for a total) and their counts (``None`` for a suppressed cell).
Two tables are compared when they count the same thing (the same count
column name) over dimensions that overlap. Both are written over the same
*atoms* — the finest cells of the union of their dimensions: categories,
and for age-like labels (``≥ 18``, ``18-24``, ``65+``, ``(17, 24]``) the
elementary intervals between every bound either table uses — so that every
published cell is a sum of atoms, a row of a linear system ``A x = b``.

A *group* — one atom, or a margin of atoms over some of the dimensions — is
determined exactly when its row lies in the row space of ``A`` (it is
orthogonal to the null space). A group that

* is determined by the two tables together but by neither alone,
* is not itself a published cell of either, and
* holds ``0 < n < threshold`` (or is a suppressed cell of either holding
  less than the threshold),

fails as ``differencing``, naming both tables. Tables whose common cells
disagree count different populations and are not compared; nor are two
tables all of whose counts are multiples of the policy's rounding base
(their differences are not exact). The same comparison runs between the
tables of one request (:func:`difference_reports`, which ``check_paths``
and the airlock call) and between a request's tables and the released ones
of the airlock's ledger.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .detect import is_total_label, normalise
from .policy import DisclosurePolicy
from .report import FileReport, Finding
from .rules import finding
from .table import parse_numbers

#: a table with more cells than this is not kept for differencing
MAX_CELLS = 5000
#: most dimensions of the union of two compared tables
MAX_DIMS = 4
#: most atoms of a compared pair (the system is dense)
MAX_ATOMS = 4000
#: most differencing findings per file
MAX_FINDINGS = 50
#: the dimension name of a crosstab's header (its variable's name is not written out)
COLUMNS_DIM = "~columns"
ALL = "*"
#: the atom of a categorical dimension holding the categories one table does not list
OTHER = "(not listed)"
INF = math.inf


@dataclass
class CountTable:
    """The counts of one table, as differencing sees them."""

    source: str  # the file (display name) and part it came from
    measure: str  # normalised count column name ("" for a crosstab's header)
    dims: tuple[str, ...]
    cells: list[tuple[tuple[str, ...], float | None]]
    origin: dict[str, Any] = field(default_factory=dict)  # e.g. the earlier release

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "measure": self.measure, "dims": list(self.dims),
                "cells": [[list(k), v] for k, v in self.cells], **(
                    {"origin": dict(self.origin)} if self.origin else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountTable:
        dims = tuple(str(d) for d in data["dims"])
        cells = []
        width = len(dims)
        for key, value in data["cells"]:
            key = tuple(map(str, key))
            if len(key) != width:
                raise ValueError("a cell key does not match the table's dimensions")
            cells.append((key, None if value is None else float(value)))
        return cls(source=str(data["source"]), measure=str(data.get("measure", "")), dims=dims,
                   cells=cells, origin=dict(data.get("origin") or {}))

    def published(self) -> dict[tuple[str, ...], float]:
        return {k: v for k, v in self.cells if v is not None}


# ------------------------------------------------------------------ extraction


def _label(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    s = re.sub(r"\s+", " ", str(value)).strip()
    if not s:
        return None
    return ALL if is_total_label(s) else s


def extract(t: Any, label_cols: Sequence[int], count_cols: Sequence[int],
            source: str = "") -> CountTable | None:
    """The count table of an analysed :class:`~ecluse.sdc.table.Table` (or ``None``)."""
    if not label_cols or not count_cols:
        return None
    n = len(t.body)
    if n == 0 or n * len(count_cols) > MAX_CELLS or (t.declared_rows or 0) > n:
        return None
    num = (t.pre or {}).get("num") or {j: parse_numbers(t.body[j], t.decimal_comma)
                                       for j in count_cols}
    labels: list[list[str | None]] = []
    for j in label_cols:
        labels.append([_label(v) for v in t.body[j].tolist()])
    # a hierarchical index written out: the outer levels are left blank below their first row
    for col in labels[:-1]:
        last = None
        for i, v in enumerate(col):
            if v is None:
                col[i] = last
            else:
                last = v
    dims = [normalise(t.names[j]) or f"column_{j}" for j in label_cols]
    multi = len(count_cols) > 1
    if multi:
        dims.append(COLUMNS_DIM)
        measure = ""
    else:
        measure = normalise(t.names[count_cols[0]])
    if len(set(dims)) != len(dims):
        return None
    cells: list[tuple[tuple[str, ...], float | None]] = []
    seen: set[tuple[str, ...]] = set()
    for j in count_cols:
        head = ALL if any(is_total_label(p) for p in t.levels[j] if p) else t.names[j]
        vals = num[j].to_numpy()
        for i in range(n):
            key = tuple(ALL if col[i] is None else col[i] for col in labels)
            if multi:
                key += (head,)
            if key in seen:
                return None  # the same cell twice: not a table differencing can read
            seen.add(key)
            v = vals[i]
            cells.append((key, None if v != v else float(v)))
    return CountTable(source=source, measure=measure, dims=tuple(dims), cells=cells)


# ------------------------------------------------------------------ intervals

_NUM = r"(-?\d+)"
_INTERVAL_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(rf"^(?:>=|≥|=>)\s*{_NUM}$"), lambda a: (a, INF)),
    (re.compile(rf"^>\s*{_NUM}$"), lambda a: (a + 1, INF)),
    (re.compile(rf"^{_NUM}\s*(?:\+|ans? et plus|and over|and older|or more|ou plus|et plus)$"),
     lambda a: (a, INF)),
    (re.compile(rf"^(?:<=|≤|=<)\s*{_NUM}$"), lambda a: (-INF, a + 1)),
    (re.compile(rf"^(?:<|under|moins de)\s*{_NUM}$"), lambda a: (-INF, a)),
    (re.compile(rf"^{_NUM}\s*(?:-|–|—|to|à|a)\s*{_NUM}$"), lambda a, b: (a, b + 1)),
    (re.compile(rf"^\(\s*{_NUM}(?:\.0+)?\s*,\s*{_NUM}(?:\.0+)?\s*\]$"), lambda a, b: (a + 1, b + 1)),
    (re.compile(rf"^\[\s*{_NUM}(?:\.0+)?\s*,\s*{_NUM}(?:\.0+)?\s*\)$"), lambda a, b: (a, b)),
    (re.compile(rf"^{_NUM}$"), lambda a: (a, a + 1)),
]


def interval(label: str) -> tuple[float, float] | None:
    """``≥ 18`` → (18, inf), ``18-24`` → (18, 25): integer bands, half-open."""
    s = label.strip().lower()
    for rx, make in _INTERVAL_PATTERNS:
        m = rx.match(s)
        if m:
            lo, hi = make(*(int(g) for g in m.groups()))
            return (lo, hi) if lo < hi else None
    return None


def _band(lo: float, hi: float) -> str:
    if lo == -INF:
        return f"< {int(hi)}"
    if hi == INF:
        return f"≥ {int(lo)}"
    return str(int(lo)) if hi - lo == 1 else f"{int(lo)}-{int(hi) - 1}"


@dataclass
class _Dim:
    """The atoms of one dimension and, for each label, the atoms it covers."""

    atoms: list[str]
    cover: dict[str, list[int]]
    interval: bool = False


def _dimension(labels: set[str]) -> _Dim:
    concrete = sorted(lab for lab in labels if lab != ALL)
    bands = {lab: interval(lab) for lab in concrete}
    if concrete and all(b is not None for b in bands.values()) and len(concrete) > 1:
        bounds = sorted({x for b in bands.values() for x in b if x not in (INF, -INF)})  # type: ignore[union-attr]
        edges = [-INF, *bounds, INF]
        spans = list(itertools.pairwise(edges))
        cover = {lab: [k for k, (lo, hi) in enumerate(spans) if lo >= b[0] and hi <= b[1]]  # type: ignore[index]
                 for lab, b in bands.items()}
        cover[ALL] = list(range(len(spans)))
        return _Dim([_band(lo, hi) for lo, hi in spans], cover, interval=True)
    cover = {lab: [k] for k, lab in enumerate(concrete)}
    cover[ALL] = list(range(len(concrete)))
    return _Dim(list(concrete), cover)


# ------------------------------------------------------------------ comparison


@dataclass
class Recovered:
    """A group recovered by subtracting ``first`` and ``second``."""

    first: CountTable
    second: CountTable
    group: dict[str, str]  # dimension -> label ("*" left out)
    value: float
    suppressed: bool  # the group is a suppressed cell of one of the tables


def comparable(a: CountTable, b: CountTable) -> bool:
    return (a.measure == b.measure and bool(set(a.dims) & set(b.dims))
            and len(set(a.dims) | set(b.dims)) <= MAX_DIMS)


def _multiples(tables: Iterable[CountTable], base: int) -> bool:
    if base <= 1:
        return False
    n = 0
    for t in tables:
        cache = t.__dict__.setdefault("_multiples", {})
        if base not in cache:
            vals = [v for _, v in t.cells if v is not None]
            cache[base] = (len(vals), all(v % base == 0 for v in vals))
        count, every = cache[base]
        if not every:
            return False
        n += count
    return n >= 4


def margins(t: CountTable, shared: tuple[str, ...]) -> dict[tuple[str, ...], float | None]:
    """``t``'s counts over the dimensions ``shared`` only: a published cell with a total
    in every other dimension, else the sum of its finest cells (``None``: one is hidden)."""
    cache = t.__dict__.setdefault("_margins", {})
    if shared in cache:
        return cache[shared]
    # which dimensions of each cell are totals, as bits (computed once per table): a
    # ledger of a thousand tables is compared with every table of a request
    totals = t.__dict__.get("_totals")
    if totals is None:
        totals = t.__dict__["_totals"] = [
            sum(1 << k for k, lab in enumerate(key) if lab == ALL) for key, _ in t.cells]
    pos = [t.dims.index(d) for d in shared]
    rest = sum(1 << k for k in range(len(t.dims)) if t.dims[k] not in shared)
    pick: Any = (operator.itemgetter(*pos) if len(pos) > 1 else
                 (lambda key, p=pos[0]: (key[p],)) if pos else (lambda key: ()))
    direct: dict[tuple[str, ...], float | None] = {}
    sums: dict[tuple[str, ...], float | None] = {}
    for (key, v), tot in zip(t.cells, totals, strict=True):
        other = tot & rest
        if other == rest:  # a total in every other dimension: a published margin
            direct[pick(key)] = v
        elif not other:  # a finest cell over the other dimensions
            sk = pick(key)
            prev = sums.get(sk, 0.0)
            sums[sk] = None if v is None or prev is None else prev + v
    out = {**sums, **direct}
    cache[shared] = out
    return out


def _evidence(a: CountTable, b: CountTable) -> tuple[bool, bool]:
    """(``link``, ``conflict``): a margin over the dimensions both share that both
    tables give, with the same count (same population) or with different ones."""
    shared = tuple(sorted(set(a.dims) & set(b.dims)))
    ma, mb = margins(a, shared), margins(b, shared)
    link = conflict = False
    for k in ma.keys() & mb.keys():
        va, vb = ma[k], mb[k]
        if va is None or vb is None:
            continue
        if abs(va - vb) <= 1e-6 * max(1.0, abs(va)):
            link = True
        elif ALL not in k:
            conflict = True
            break
    return link, conflict


def compare(a: CountTable, b: CountTable, policy: DisclosurePolicy) -> list[Recovered]:
    """Groups that ``a`` and ``b`` together reveal below the threshold (see the module)."""
    if not comparable(a, b) or _multiples((a, b), policy.rounding_base):
        return []
    # a common margin with two counts: two populations, not compared
    link, conflict = _evidence(a, b)
    if conflict:
        return []
    dims = sorted(set(a.dims) | set(b.dims))

    def widen(t: CountTable) -> list[tuple[tuple[str, ...], float | None]]:
        pos = {d: k for k, d in enumerate(t.dims)}
        return [(tuple(key[pos[d]] if d in pos else ALL for d in dims), v) for key, v in t.cells]

    ca, cb = widen(a), widen(b)
    pa_, pb_ = dict(c for c in ca if c[1] is not None), dict(c for c in cb if c[1] is not None)
    if pa_ == pb_:
        return []
    differ = [k for k in pa_.keys() & pb_.keys()
              if abs(pa_[k] - pb_[k]) > 1e-6 * max(1.0, abs(pa_[k]))]
    if any(ALL not in k for k in differ):
        return []  # the same cell with two values: two populations
    agree = not differ
    # a total is first read as the total of every category either table lists; when the
    # two disagree, as the total of the categories its own table lists (a crosstab without
    # a category), the other's total holding the rest: the categories not listed
    for listed in ((None, 0, 1) if agree else (0, 1)):
        got = _compare(a, b, ca, cb, dims, listed, policy)
        if got is not None:
            return got
    return []  # no counts of one population satisfy both tables: two populations


def _compare(a: CountTable, b: CountTable, ca: list, cb: list, dims: list[str],
             listed: int | None, policy: DisclosurePolicy) -> list[Recovered] | None:
    tabs = (ca, cb)
    axes = [_dimension({c[0][k] for c in ca + cb}) for k in range(len(dims))]
    own: list[list[list[int] | None]] = [[None] * len(dims), [None] * len(dims)]
    if listed is not None:
        narrower = False
        for k, ax in enumerate(axes):
            if ax.interval:
                continue
            mine = {c[0][k] for c in tabs[listed]} - {ALL}
            if not mine:
                continue
            narrower = True
            own[listed][k] = [ax.cover[lab][0] for lab in sorted(mine)]
            ax.atoms.append(OTHER)
            ax.cover[ALL] = list(range(len(ax.atoms)))
        if not narrower:
            return None
    sizes = [len(ax.atoms) for ax in axes]
    n_atoms = math.prod(sizes)
    if n_atoms == 0 or n_atoms > MAX_ATOMS:
        return []
    strides = [math.prod(sizes[k + 1:]) for k in range(len(sizes))]

    def row(key: tuple[str, ...], t: int) -> np.ndarray:
        r = np.zeros(n_atoms)
        idx = np.zeros(1, dtype=np.int64)
        for k, lab in enumerate(key):
            sel = own[t][k] if lab == ALL and own[t][k] is not None else axes[k].cover.get(lab, [])
            cov = np.asarray(sel, dtype=np.int64)
            idx = (idx[:, None] + cov[None, :] * strides[k]).ravel()
        r[idx] = 1.0
        return r

    published = [(key, v, t) for t, cells in enumerate(tabs) for key, v in cells if v is not None]
    suppressed = [(key, t) for t, cells in enumerate(tabs) for key, v in cells if v is None]
    A = np.array([row(k, t) for k, _, t in published])
    bvec = np.array([v for _, v, _ in published])
    which = np.array([t for _, _, t in published])
    null, x0 = _solve(A, bvec)
    if x0 is None:
        return None
    # the suppressed cells first (a suppressed atom is reported as such), then every
    # margin of atoms over every subset of the dimensions: the rows of the Kronecker
    # product of [all; each atom] per dimension
    S = np.array([row(key, t) for key, t in suppressed]).reshape(len(suppressed), n_atoms)
    M = np.ones((1, 1))
    for size in sizes:
        M = np.kron(M, np.vstack([np.ones((1, size)), np.eye(size)]))
    G = np.vstack([S, M])
    values = np.round(G @ x0, 6)
    thr = policy.threshold
    supp = np.arange(len(G)) < len(S)
    small = (values < thr) & (values >= 0) & ((values > 0) | supp)
    if not small.any():
        return []
    idx = np.flatnonzero(small)
    if null.size:
        idx = idx[np.abs(G[idx] @ null.T).max(axis=1) < 1e-8]
    if not len(idx):
        return []
    seen_rows = {A[i].tobytes() for i in range(len(A))}
    cands = []
    for g in idx:
        r = G[g]
        if not supp[g] and r.tobytes() in seen_rows:
            continue  # published as it is: the table's own check judges it
        if supp[g]:
            key = suppressed[g][0]
            key = tuple(lab for lab in key)
        else:
            choice = np.unravel_index(g - len(S), [s_ + 1 for s_ in sizes])
            key = tuple(ALL if c == 0 else axes[k].atoms[c - 1] for k, c in enumerate(choice))
        cands.append((key, r, bool(supp[g]), float(values[g])))
    if not cands:
        return []
    alone = [_solve(A[which == t], bvec[which == t])[0] for t in (0, 1)]
    out: list[Recovered] = []
    done: set[bytes] = set()
    for key, r, supp, val in cands:
        if r.tobytes() in done:
            continue
        done.add(r.tobytes())
        if OTHER not in key and any(n.size == 0 or np.abs(n @ r).max() < 1e-8 for n in alone):
            continue  # one table alone gives it: not a differencing of the two
        group = {d: lab for d, lab in zip(dims, key, strict=True) if lab != ALL}
        out.append(Recovered(a, b, group, val, supp))
    return out


def _solve(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The null space of ``A`` (rows) and a solution of ``A x = b`` (``None`` if none)."""
    if A.size == 0:
        return np.eye(A.shape[1] if A.ndim == 2 else 0), np.zeros(A.shape[1] if A.ndim == 2 else 0)
    _, s, vt = np.linalg.svd(A, full_matrices=True)
    tol = max(A.shape) * np.finfo(float).eps * (s[0] if len(s) else 0.0) * 10
    rank = int((s > tol).sum())
    null = vt[rank:]
    x0, *_ = np.linalg.lstsq(A, b, rcond=None)
    if np.abs(A @ x0 - b).max(initial=0.0) > 1e-6 * max(1.0, float(np.abs(b).max(initial=0.0))):
        return null, None
    return null, x0


# ------------------------------------------------------------------ reports


def tables_of(report: FileReport) -> list[CountTable]:
    """The count tables a file's check kept (``details["count_tables"]``)."""
    out = []
    for data in (report.details or {}).get("count_tables") or []:
        try:
            out.append(CountTable.from_dict(data))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def describe(group: dict[str, str]) -> str:
    if not group:
        return "the total"
    return ", ".join(f"{'column' if d == COLUMNS_DIM else d} {v}" for d, v in group.items())


def _cited(t: CountTable) -> str:
    o = t.origin
    if o.get("request"):
        return f"{t.source} (released in request {o['request']}" + (
            f", version {o['version']})" if o.get("version") else ")")
    return t.source


def _finding(rec: Recovered, mine: CountTable, policy: DisclosurePolicy) -> Finding:
    other = rec.second if mine is rec.first else rec.first
    what = "the suppressed cell" if rec.suppressed else "a group no table publishes"
    where = "an earlier release" if other.origin.get("request") else "another table of this request"
    order = [*mine.dims, *other.dims]
    group = dict(sorted(rec.group.items(), key=lambda kv: order.index(kv[0])))
    msg = (f"{what} ({describe(group)}) is {rec.value:g}, below the threshold "
           f"{policy.threshold}: recovered by subtracting {mine.source} and {_cited(other)} "
           f"({where})")
    loc: dict[str, Any] = {"labels": group, "pair": [mine.source, other.source]}
    if other.origin.get("request"):
        loc["released_in"] = other.origin["request"]
    return finding("differencing", msg, **loc)


def differencing_findings(new: Sequence[CountTable], policy: DisclosurePolicy,
                          released: Sequence[CountTable] = ()) -> dict[int, list[Finding]]:
    """Findings per index of ``new``: its pairs within ``new`` and with ``released``."""
    out: dict[int, list[Finding]] = {}
    index: dict[tuple[str, str], list[CountTable]] = {}
    for t in released:
        for d in t.dims:
            index.setdefault((t.measure, d), []).append(t)
    for i, a in enumerate(new):
        for k in range(i + 1, len(new)):
            for rec in compare(a, new[k], policy):
                out.setdefault(i, []).append(_finding(rec, a, policy))
                out.setdefault(k, []).append(_finding(rec, new[k], policy))
        others: dict[int, CountTable] = {}
        for d in a.dims:
            for t in index.get((a.measure, d), []):
                others[id(t)] = t
        for t in others.values():
            for rec in compare(a, t, policy):
                out.setdefault(i, []).append(_finding(rec, a, policy))
    return out


def difference_reports(reports: Sequence[FileReport], policy: DisclosurePolicy,
                       released: Sequence[CountTable] = ()) -> None:
    """Add ``differencing`` findings to the reports of one request (in place).

    Findings of an earlier call are replaced, so the set can be judged again
    when a file is added or removed or the ledger grew."""
    owners: list[int] = []
    tables: list[CountTable] = []
    for r, rep in enumerate(reports):
        rep.findings = [f for f in rep.findings if f.rule != "differencing"]
        for t in tables_of(rep):
            owners.append(r)
            tables.append(t)
    found = differencing_findings(tables, policy, released)
    per_file: dict[int, list[Finding]] = {}
    for i, fs in found.items():
        per_file.setdefault(owners[i], []).extend(fs)
    for r, rep in enumerate(reports):
        rep.findings.extend(per_file.get(r, [])[:MAX_FINDINGS])
        rep.verdict = FileReport.verdict_of(rep.findings)


# ------------------------------------------------------------------ one table


class TableSystem:
    """The cells of one table as sums of its atoms, to ask which hidden cells the
    published ones determine (used by :mod:`ecluse.sdc.suppress`)."""

    def __init__(self, table: CountTable) -> None:
        self.table = table
        dims = range(len(table.dims))
        self.axes = [_dimension({key[k] for key, _ in table.cells}) for k in dims]
        # within one table a total is the sum of the categories it lists, as the checker
        # reads it (``recoverable-suppression``): the open bands of an interval dimension
        # (``< 18``, ``≥ 66`` around ``18-40``, ``41-65``) are not hidden parts of it
        for ax in self.axes:
            listed = sorted({a for lab, cov in ax.cover.items() if lab != ALL for a in cov})
            if listed:
                ax.cover[ALL] = listed
        sizes = [len(ax.atoms) for ax in self.axes]
        self.n_atoms = math.prod(sizes)
        if self.n_atoms == 0 or self.n_atoms > MAX_ATOMS:
            raise ValueError(f"a table of {self.n_atoms} atoms is too large to solve")
        strides = [math.prod(sizes[k + 1:]) for k in range(len(sizes))]
        rows = []
        for key, _ in table.cells:
            idx = np.zeros(1, dtype=np.int64)
            for k, lab in enumerate(key):
                cov = np.asarray(self.axes[k].cover.get(lab, []), dtype=np.int64)
                idx = (idx[:, None] + cov[None, :] * strides[k]).ravel()
            r = np.zeros(self.n_atoms)
            r[idx] = 1.0
            rows.append(r)
        self.rows = np.array(rows).reshape(len(rows), self.n_atoms)
        # nested levels (districts within regions) and combinations a long table leaves
        # out: no part of any total, as a reader takes them (see :meth:`absent`)
        self.rows[:, self.absent(sizes).ravel()] = 0.0

    def absent(self, sizes: list[int]) -> np.ndarray:
        """The atoms (combinations of one atom per dimension) the table says do not exist.

        A reader takes a subtotal to be the sum of the parts listed under it: a
        region's subtotal is the sum of that region's districts, not of every district
        of the table. So a combination is absent when, over some two or more of the
        dimensions, the table breaks down each of its sub-combinations (one dimension
        left out) along the dimension left out, and never lists the combination
        itself: district ``c`` is listed under South, North is broken down into
        ``a`` and ``b``, so (North, ``c``) is absent. A group the table never breaks
        down (a subtotal with no rows under it) keeps all its combinations."""
        d = len(sizes)
        out = np.zeros(sizes, dtype=bool)
        if d < 2:
            return out
        covers = [[self.axes[k].cover.get(lab) if lab != ALL else None
                   for k, lab in enumerate(key)] for key, _ in self.table.cells]
        for m in range(2, d + 1):
            for dims in itertools.combinations(range(d), m):
                shape = [sizes[k] for k in dims]
                present = np.zeros(shape, dtype=bool)
                for cov in covers:
                    if all(cov[k] for k in dims):
                        present[np.ix_(*[cov[k] for k in dims])] = True
                if not present.any():
                    continue
                # every sub-combination without one of the dimensions is broken down
                # along it (some combination extending it is listed)
                gone = ~present
                for axis in range(m):
                    gone &= present.any(axis=axis, keepdims=True)
                if not gone.any():
                    continue
                full = [sizes[k] if k in dims else 1 for k in range(d)]
                out |= gone.reshape(full)
        return out

    def determined(self, hidden: Iterable[int]) -> list[int]:
        """The hidden cells (indices into ``table.cells``) the others determine exactly."""
        hidden = sorted(set(hidden))
        if not hidden:
            return []
        shown = np.ones(len(self.rows), bool)
        shown[hidden] = False
        if not shown.any():
            return []
        null, _ = _solve(self.rows[shown], np.zeros(int(shown.sum())))
        h = self.rows[hidden]
        if null.size == 0:
            return list(hidden)
        return [c for c, ok in zip(hidden, np.abs(h @ null.T).max(axis=1) < 1e-8, strict=True)
                if ok]
