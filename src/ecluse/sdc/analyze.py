"""Judge one table: row-level data (block) first, then aggregate checks (fail).

:func:`analyze_table` returns the findings and a :class:`Profile` saying which
columns hold counts, so a streaming reader can check the rest of a large file
with the same decisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .detect import (
    DF_NAMES,
    DFMODEL_NAMES,
    NOBS_NAMES,
    is_total_label,
    name_kind,
    normalise,
    regression_role,
    value_identifier_kind,
    values_kind,
)
from .policy import DisclosurePolicy
from .report import Finding
from .rules import finding
from .table import Table, is_empty, is_marker, parse_numbers

#: most cell locations reported per rule and table; the rest are summed up
MAX_LOCATIONS = 50
#: values per column tested against identifier patterns
SAMPLE_VALUES = 2000

_TOP_RE = re.compile(r"^(?:top|largest|max|contrib|contributor|rank|plus_grand)_?(\d)$")
_TOP_ALT = {"first": 1, "second": 2, "third": 3, "largest": 1, "max": 1, "second_largest": 2}
_TOTAL_VALUE = {"total", "sum", "somme", "total_value", "value_total", "montant_total"}


@dataclass
class Profile:
    """Decisions about a table's columns, reused when streaming the rest of a file."""

    blocked: bool = False
    count_cols: list[int] = field(default_factory=list)
    stat_cols: list[int] = field(default_factory=list)
    label_cols: list[int] = field(default_factory=list)
    count_named: bool = False
    identifier_cols: list[int] = field(default_factory=list)


class _Cells:
    """Collect offending cells of one rule, capped, then emit findings."""

    def __init__(self, rule: str, table: Table, labels: list[int]):
        self.rule, self.table, self.labels = rule, table, labels
        self.items: list[tuple[int, int, str]] = []
        self.total = 0

    def add(self, i: int, j: int, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_LOCATIONS:
            self.items.append((i, j, message))

    def findings(self) -> list[Finding]:
        out = []
        for i, j, msg in self.items:
            out.append(finding(self.rule, msg, **self.table.loc(i, j, _labels(self.table, i, self.labels))))
        if self.total > len(self.items):
            out.append(finding(self.rule, f"… and {self.total - len(self.items)} more cells "
                               f"({self.total} in all)", **self.table.base))
        return out


#: column name kinds whose whole numbers are labels (a year, an age band, a code)
LABEL_KINDS = ("label", "sex", "postcode", "birth", "weak-id")


def _labels(t: Table, i: int, label_cols: list[int]) -> dict[str, str]:
    out = {}
    for j in label_cols[:3]:
        v = t.body.iat[i, j]
        if v is not None and not (isinstance(v, float) and v != v):
            out[t.names[j]] = str(v)[:40]
    return out


def analyze_table(t: Table, policy: DisclosurePolicy) -> tuple[list[Finding], Profile]:
    body = t.body
    n, m = body.shape
    prof = Profile()
    if n == 0 or m == 0:
        return [finding("ambiguous-layout", "table with a header but no data rows",
                        **t.base)], prof
    kinds = [name_kind(nm) for nm in t.names]
    pre = t.pre or {}
    num = pre.get("num") or {j: parse_numbers(body[j], t.decimal_comma) for j in range(m)}
    empty = pre.get("empty") or {j: is_empty(body[j]) for j in range(m)}
    marker = pre.get("marker") or {j: is_marker(body[j]) for j in range(m)}
    numeric, integer = {}, {}
    empty = dict(empty)
    for j in range(m):
        na = _na_cells(body[j], num[j])
        if na is not None:
            empty[j] = empty[j] | na  # R's NA in a column of numbers: a missing value
        cand = ~empty[j] & ~marker[j]
        got = num[j][cand]
        numeric[j] = bool(len(got)) and got.notna().mean() >= 0.9
        vals = got.dropna()
        integer[j] = numeric[j] and bool(len(vals)) and bool((vals == np.round(vals)).all())
    # a column whose every cell is a suppression mark (a whole column of a crosstab
    # hidden, its total too) holds hidden counts, not labels: read as a label column,
    # the totals of the rows would seem to be the sum of the cells left shown
    if any(numeric.values()):
        for j in range(1, m):
            if (not numeric[j] and kinds[j] not in LABEL_KINDS and bool(marker[j].any())
                    and bool((marker[j] | empty[j]).all())):
                numeric[j] = integer[j] = True

    out: list[Finding] = []
    # ---------------------------------------------------------- identifiers
    for j, nm in enumerate(t.names):
        nonempty = body[j][~empty[j]]
        if not len(nonempty):
            continue
        if kinds[j] == "identifier":
            out.append(finding("identifier-column", f"column {nm!r} is named like an identifier",
                               **t.loc(None, j)))
            prof.identifier_cols.append(j)
            continue
        sample = nonempty.head(SAMPLE_VALUES)
        if kinds[j] == "weak-id" and len(sample) >= 5:
            if sample.astype(str).nunique() >= 0.9 * len(sample):
                out.append(finding("identifier-column",
                                   f"column {nm!r} is named like an identifier and its values are "
                                   "distinct", **t.loc(None, j)))
                prof.identifier_cols.append(j)
                continue
        values = sample.tolist()
        leading_zeros = any(isinstance(v, str) and len(v.strip()) > 1 and v.strip()[0] == "0"
                            and v.strip().isdigit() for v in values)
        if numeric[j] and not (num[j].abs() >= 1e6).any() and not leading_zeros:
            continue  # plain small numbers (no leading zeros): not identifiers
        # a column named as a count may hold large counts (7+ digits, like a
        # hospital number); digits with a leading zero are never a count
        kind = value_identifier_kind(values, hospital_numbers=leading_zeros or kinds[j] not in (
            "count", "stat", "total", "df", "nobs", "dfmodel"))
        if kind:
            i = int(sample.index[0])
            out.append(finding("identifier-value", f"values of column {nm!r} look like {kind}s "
                               f"(e.g. row {t.rownums[i]})", **t.loc(None, j)))
            prof.identifier_cols.append(j)
    head_kind = value_identifier_kind(t.names)
    if head_kind and m >= 3:
        out.append(finding("identifier-value", f"column headers look like {head_kind}s "
                           "(a transposed table of individuals)", **t.base))
    # ---------------------------------------------------------- roles
    # a written-out row number (``to_csv`` with its default index) is neither label nor value
    rownum = {j for j in range(min(m, 2)) if integer[j] and _is_row_number(t.names[j], num[j])}
    # numbers are a label by the column's name only when they are whole (a year, an age
    # band, a code): measurements with decimals under such a name stay values
    label_cols = [j for j in range(m) if j not in rownum and (
                  not numeric[j] or (integer[j] and kinds[j] in LABEL_KINDS)
                  or (j == 0 and t.names[j].startswith("column ") and integer[j]))]
    value_cols = [j for j in range(m) if j not in label_cols and j not in rownum]
    reg = {j: regression_role(t.names[j]) for j in value_cols}
    is_regression = any(r == "coef" for r in reg.values()) and any(r == "err" for r in reg.values())
    aux = {j for j in value_cols if kinds[j] in ("df", "nobs", "dfmodel")}
    if aux:  # a model summary (broom's glance): its plain "df" is the model's
        aux |= {j for j in value_cols if normalise(t.names[j]) == "df"}
        kinds = [("dfmodel" if j in aux and normalise(nm) == "df" else k)
                 for j, (nm, k) in enumerate(zip(t.names, kinds, strict=True))]
    top_cols, total_value_col = _dominance_columns(t, value_cols)
    dom = set(top_cols.values()) | ({total_value_col} if total_value_col is not None else set())
    # a count is a whole number: a column named "n" that holds 70.3 is not one
    count_named = [j for j in value_cols if kinds[j] == "count" and integer[j]]
    # a name alone never makes a count: a count column whose value is (nearly) the
    # same on every row of a long table counts nothing, and the rows are judged as
    # if it were not there
    flat = [j for j in count_named if _constant(num[j], policy.row_level_min_rows)]
    count_named = [j for j in count_named if j not in flat]
    total_cols = [j for j in value_cols if (kinds[j] == "total" or _total_header(t, j))
                  and integer[j] and j not in dom]
    surv = _survival_roles(t, value_cols, integer)
    if surv is not None:
        # a survival / life table: time is its label, the numbers at risk, events,
        # censorings and entries are its counts, the estimates are statistics on the
        # number at risk of their row
        label_cols = label_cols + surv.time
        value_cols = [j for j in value_cols if j not in surv.time]
        count_named = surv.counts
        flat = []
        counts = list(surv.counts)
        stats = [j for j in value_cols if j not in counts and j not in aux and j not in dom]
    elif count_named:
        counts = count_named + [j for j in total_cols if j not in count_named]
        stats = [j for j in value_cols if j not in counts and j not in aux and j not in dom
                 and not (is_regression and reg[j])]
    else:
        counts = [j for j in value_cols if integer[j] and kinds[j] != "stat" and j not in aux
                  and j not in dom and j not in flat and not (is_regression and reg[j])]
        stats = [j for j in value_cols if j not in counts and j not in aux and j not in dom
                 and not (is_regression and reg[j])]
    prof.count_cols, prof.stat_cols, prof.label_cols = counts, stats, label_cols
    prof.count_named = bool(count_named)
    # ---------------------------------------------------------- quasi-identifiers
    qi = _quasi_identifiers(t, kinds, label_cols, empty)
    if qi:
        out.append(finding("quasi-identifiers", qi, **t.base))
    for j in flat:
        v = num[j].dropna()
        top = v.value_counts().index[0]
        if n >= policy.row_level_min_rows:
            out.append(finding("constant-count", f"column {t.names[j]!r} is named as a count but "
                               f"holds {_fmt(top)} on {int((v == top).sum())} of {len(v)} rows: "
                               "not a count; the rows were judged without it", **t.loc(None, j)))
    # ---------------------------------------------------------- row-level structure
    n_total = t.n_rows
    if not count_named and n_total > policy.max_rows_aggregate:
        out.append(finding("row-level", f"{n_total} rows and no count column: more rows than an "
                           f"aggregate may have ({policy.max_rows_aggregate})", **t.base))
    keys = list(label_cols)
    if count_named:
        keys += [j for j in value_cols if integer[j] and j not in counts and j not in aux]
    keyframe = body[keys].copy() if keys else None
    if keyframe is not None:
        for j in keys[:-1]:
            keyframe[j] = keyframe[j].where(~empty[j], None).ffill()
        keystr = keyframe.astype(str)
        dup = keystr.duplicated(keep=False)
        if dup.any() and not is_regression:
            i = int(np.flatnonzero(dup.to_numpy())[0])
            msg = (f"{int(dup.sum())} of {n} rows repeat the same labels "
                   f"({', '.join(t.names[j] for j in keys[:4])})")
            if n >= policy.row_level_min_rows:
                out.append(finding("repeated-keys", msg + ": rows are records, not cells",
                                   **t.loc(i, None)))
            else:
                out.append(finding("ambiguous-layout", msg, **t.loc(i, None)))
    if (not count_named and not label_cols and not is_regression and value_cols
            and n >= policy.row_level_min_rows):
        out.append(finding("row-level", f"{n} rows of numbers without any label or count "
                           "column: individual records", **t.base))
    elif (not count_named and label_cols and all(numeric[j] for j in label_cols)
          and value_cols and not is_regression and n >= policy.row_level_min_rows):
        # numbers keyed only by numbers (a label by name, e.g. "strata", holding
        # numbers) and no column named as a count: as likely two measurements per
        # person as a frequency table; a person has to look
        names = ", ".join(repr(t.names[j]) for j in label_cols[:3])
        out.append(finding("ambiguous-layout", f"{n} rows of numbers keyed only by numeric "
                           f"columns ({names}) and no column named as a count: whether rows "
                           "are cells or records cannot be told", **t.base))
    elif (count_named and not label_cols and not is_regression
          and n >= policy.row_level_min_rows):
        out.append(finding("ambiguous-layout", f"{n} rows of counts without any label column: "
                           "what each row counts cannot be told", **t.base))
    elif not counts and not stats and not is_regression and n >= policy.row_level_min_rows:
        distinct = body.astype(str).drop_duplicates().shape[0] / n
        if distinct >= policy.distinct_share:
            out.append(finding("row-level", f"{n} rows, {distinct:.0%} distinct, no count or "
                               "statistic column: individual records", **t.base))
    for j in counts:
        vals = num[j].dropna()
        if len(vals) >= 2 and (vals == 1).all() and len(counts) == 1:
            out.append(finding("count-all-ones", f"count column {t.names[j]!r} is 1 on all "
                               f"{len(vals)} rows: one row per person", **t.loc(None, j)))
    if any(f.severity == "block" for f in out):
        prof.blocked = True
        return out, prof
    # ---------------------------------------------------------- aggregate checks
    desc = _statistics_in_rows(t, policy, label_cols, value_cols, num)
    if desc is not None:  # ``df.describe()``: a statistic per row, a variable per column
        return out + desc, prof
    small = _Cells("small-count", t, label_cols)
    zeros = _Cells("zero-count", t, label_cols)
    unrounded = _Cells("unrounded-count", t, label_cols)
    thr = policy.threshold
    zeros_fail = policy.zeros_disclosive and (surv is None or policy.survival_zeros_disclosive)
    for j in counts:
        v = num[j].to_numpy()
        for i in np.flatnonzero((v > 0) & (v < thr)):
            small.add(int(i), j, f"count {_fmt(v[i])} is below the threshold {thr}")
        if zeros_fail:
            for i in np.flatnonzero(v == 0):
                if surv is not None and i == 0:
                    continue  # the first interval's zero is structural
                zeros.add(int(i), j, "zero count (zeros are disclosive under this policy)")
        if policy.rounding_required:
            base = policy.rounding_base
            for i in np.flatnonzero((v > 0) & (np.mod(v, base) != 0)):
                unrounded.add(int(i), j, f"count {_fmt(v[i])} is not rounded to a multiple "
                              f"of {base}")
    out += small.findings() + zeros.findings() + unrounded.findings()
    out += _min_max_columns(t, policy, stats, num, empty, marker)
    if stats:
        if counts:
            if surv is not None and surv.at_risk:
                cnt = num[surv.at_risk[0]]
            else:
                cnt = pd.concat([num[j] for j in counts], axis=1).min(axis=1, skipna=True)
            smalln = _Cells("small-n-statistic", t, label_cols)
            for j in stats:
                has = (~empty[j] & ~marker[j]).to_numpy()
                nn = cnt.to_numpy()
                for i in np.flatnonzero(has & (nn < thr)):
                    smalln.add(int(i), j, f"{t.names[j]} is computed on {_fmt(nn[i])} units, "
                               f"below the threshold {thr}")
            out += smalln.findings()
            out += _shares_of_counts(t, policy, counts, stats, num, label_cols)
        elif nobs_cols := [j for j in aux if kinds[j] == "nobs"]:
            # model statistics (R², AIC, a t statistic) on the model's observations
            nn = num[nobs_cols[0]].to_numpy()
            smalln = _Cells("small-n-statistic", t, label_cols)
            for j in stats:
                for i in np.flatnonzero(nn < thr):
                    smalln.add(int(i), j, f"{t.names[j]} is computed on {_fmt(nn[i])} "
                               f"observations, below the threshold {thr}")
            out += smalln.findings()
        else:
            out.append(finding("statistic-without-n", "statistics without their counts: "
                               + ", ".join(repr(t.names[j]) for j in stats[:6]), **t.base))
    out += _suppression(t, counts, label_cols, num, empty, marker)
    reg_out, model_sizes = _regression(t, policy, is_regression, label_cols, value_cols, kinds,
                                       num)
    out += reg_out
    out += _dominance(t, policy, top_cols, total_value_col, num, label_cols)
    if not counts and not stats and not is_regression and not model_sizes and not any(
            f.rule in ("low-residual-df", "dominance-nk", "dominance-p") for f in out):
        if not any(f.severity != "info" for f in out):
            out.append(finding("ambiguous-layout", "no counts or statistics found in this table",
                               **t.base))
    return out, prof


# ---------------------------------------------------------------- survival tables

#: column names (normalised) of survival / life tables: lifelines, R ``survfit``, Stata
SURV_AT_RISK = {"at_risk", "n_risk", "n_at_risk", "nrisk", "number_at_risk", "risk_set",
                "atrisk", "n_risque", "effectif_a_risque", "nb_risque"}
SURV_EVENTS = {"observed", "n_event", "n_events", "nevent", "events", "event", "deaths",
               "n_deaths", "died", "removed", "failures", "n_fail", "evenements", "deces"}
SURV_CENSOR = {"censored", "n_censor", "n_censored", "ncensor", "censor", "lost", "censures",
               "n_lost"}
SURV_ENTRY = {"entrance", "n_enter", "entered", "entries"}
SURV_TIME = {"time", "timeline", "event_at", "t", "days", "day", "months", "month", "years",
             "duration", "duree", "temps", "tps", "time_days", "time_months", "interval",
             "intervalle", "jour", "jours", "mois"}


@dataclass
class _Survival:
    time: list[int]
    at_risk: list[int]
    counts: list[int]


def _survival_roles(t: Table, value_cols: list[int],
                    integer: dict[int, bool]) -> _Survival | None:
    """The roles of a survival table's columns, or ``None`` for any other table: it
    needs a number at risk and events or censorings."""
    norm = {j: normalise(t.names[j]) for j in value_cols}
    at_risk = [j for j in value_cols if norm[j] in SURV_AT_RISK and integer[j]]
    events = [j for j in value_cols if norm[j] in SURV_EVENTS | SURV_CENSOR | SURV_ENTRY
              and integer[j]]
    if not at_risk or not events:
        return None
    time = [j for j in value_cols if norm[j] in SURV_TIME]
    return _Survival(time=time, at_risk=at_risk, counts=at_risk + events)


# ---------------------------------------------------------------- percentages

_PCT_TOKENS = {"pct", "percent", "percentage", "pourcentage", "pourcent"}
_PROP_TOKENS = {"prop", "proportion", "share", "part", "fraction"}


def _share_kind(name: str) -> str | None:
    """``pct`` for a percentage column, ``prop`` for a proportion (0–1), else ``None``.
    Percentiles (``25%``, ``los / 75%``, ``p75``, ``q1``) are not shares."""
    toks = normalise(name).split("_")
    if any(re.fullmatch(r"[pq]\d+", tok) for tok in toks) or any(
            a.isdigit() and b == "pct" for a, b in zip(toks, toks[1:], strict=False)):
        return None
    if set(toks) & _PCT_TOKENS:
        return "pct"
    if set(toks) & _PROP_TOKENS:
        return "prop"
    return None


def _shares_of_counts(t: Table, policy: DisclosurePolicy, counts: list[int], stats: list[int],
                      num: dict[int, pd.Series], label_cols: list[int]) -> list[Finding]:
    """A percentage published with its denominator gives its numerator back:
    4.0 % of 300 admissions is 12 people, 1.3 % of 300 is 4. The largest count of
    the row is taken as the denominator; a numerator it recovers below the
    threshold fails like the count it is."""
    thr = policy.threshold
    denom = pd.concat([num[j] for j in counts], axis=1).max(axis=1, skipna=True).to_numpy()
    small = _Cells("small-count", t, label_cols)
    for j in stats:
        kind = _share_kind(t.names[j])
        if kind is None:
            continue
        v = num[j].to_numpy()
        if kind == "prop" and np.nanmax(np.abs(v), initial=0) > 1:
            kind = "pct"  # written as a percentage whatever its name
        x = np.rint(v * denom / (100 if kind == "pct" else 1))
        for i in np.flatnonzero((denom >= thr) & (x > 0) & (x < thr)):
            small.add(int(i), j, f"{t.names[j]} {_fmt(v[i])} of {_fmt(denom[i])} gives a count "
                      f"of {_fmt(x[i])}, below the threshold {thr}")
    return small.findings()


# ---------------------------------------------------------------- minima, maxima

_MINMAX = {"min", "max", "minimum", "maximum", "mini", "maxi", "smallest", "largest"}


def _is_min_max(name: str) -> bool:
    return any(tok in _MINMAX for tok in normalise(name).split("_"))


def _min_max_columns(t: Table, policy: DisclosurePolicy, stats: list[int],
                     num: dict[int, pd.Series], empty: dict[int, pd.Series],
                     marker: dict[int, pd.Series]) -> list[Finding]:
    """A column of minima or maxima: each cell is one individual's value.

    Whole numbers rising down the rows (``age_min`` of age bands) are the bounds of
    the groups, not statistics, and are left alone."""
    if not policy.min_max_disclosive:
        return []
    out = []
    for j in stats:
        if not _is_min_max(t.names[j]):
            continue
        v = num[j][~empty[j] & ~marker[j]].dropna()
        if not len(v):
            continue
        if len(v) >= 3 and (v == np.round(v)).all() and v.is_monotonic_increasing and v.is_unique:
            continue
        out.append(finding("min-max", f"column {t.names[j]!r} holds minima or maxima: each is "
                           "the value of one individual (set min_max_disclosive: false to "
                           "allow them)", **t.loc(None, j)))
    return out


#: most rows of a table of statistics by row (``describe()`` has 8)
MAX_STATISTIC_ROWS = 50
#: row labels of ``df.describe()`` and of R's ``summary()``
_COUNT_ROWS = {"count", "n", "nobs", "n_obs", "effectif", "valid_n"}
_STAT_ROWS = {"mean", "std", "sd", "min", "max", "median", "25_pct", "50_pct", "75_pct",
              "1st_qu", "3rd_qu", "q1", "q3", "minimum", "maximum", "unique", "top", "freq"}


def _statistics_in_rows(t: Table, policy: DisclosurePolicy, label_cols: list[int],
                        value_cols: list[int], num: dict[int, pd.Series]) -> list[Finding] | None:
    """``df.describe()`` written out: a label column of statistic names (count, mean,
    std, min, 25%…) and one column per variable. Each variable's count is the
    ``count`` row; the other rows are statistics on it. ``None`` for other layouts."""
    if not value_cols or not label_cols or len(t.body) > MAX_STATISTIC_ROWS:
        return None
    for lj in label_cols:
        names = [normalise(v) for v in t.body[lj].tolist()]
        count_rows = [i for i, nm in enumerate(names) if nm in _COUNT_ROWS]
        stat_rows = [i for i, nm in enumerate(names) if nm in _STAT_ROWS]
        if count_rows and len(stat_rows) >= 2 and len(count_rows) + len(stat_rows) == len(names):
            break
    else:
        return None
    thr = policy.threshold
    small = _Cells("small-count", t, [lj])
    smalln = _Cells("small-n-statistic", t, [lj])
    out: list[Finding] = []
    ci = count_rows[0]
    for j in value_cols:
        n = num[j].iat[ci]
        if np.isnan(n):
            continue
        if 0 < n < thr:
            small.add(ci, j, f"count {_fmt(n)} is below the threshold {thr}")
        for i in stat_rows:
            if n < thr and not np.isnan(num[j].iat[i]):
                smalln.add(i, j, f"{t.body[lj].iat[i]} of {t.names[j]} is computed on "
                           f"{_fmt(n)} units, below the threshold {thr}")
    out += small.findings() + smalln.findings()
    if policy.min_max_disclosive:
        for i in stat_rows:
            if names[i] in _MINMAX:
                out.append(finding("min-max", f"row {t.body[lj].iat[i]!r} holds minima or "
                                   "maxima: each is the value of one individual (set "
                                   "min_max_disclosive: false to allow them)",
                                   **t.loc(i, None)))
    return out


#: how R, pandas and SQL exports write a missing number
_NA_TOKENS = {"NA", "NaN", "nan", "null", "NULL", "None", "N/A", "#N/A", "<NA>"}


def _na_cells(col: pd.Series, num: pd.Series) -> pd.Series | None:
    """Cells spelling a missing value, in a column whose other cells are (nearly all)
    numbers; ``None`` when there are none or the column is not one of numbers (a
    label ``NA`` stays a label)."""
    if col.dtype != object:
        return None
    na = col.isin(_NA_TOKENS)
    if not na.any():
        return None
    rest = num[~na & col.notna()]
    if not len(rest) or rest.notna().mean() < 0.9:
        return None
    return na


_ROWNUM_NAMES = {"", "index", "unnamed_0", "level_0", "index_level_0", "row", "rownum",
                 "row_number", "no", "num", "x"}


def _constant(values: pd.Series, min_rows: int) -> bool:
    """(Nearly) one value on every row — 90 % or more of at least ``min_rows`` rows,
    zeros aside (a sparse table is mostly zeros)."""
    v = values.dropna()
    if len(v) < min_rows:
        return False
    top = v.value_counts()
    # all ones is the count-all-ones rule's
    return bool(top.index[0] not in (0, 1) and top.iloc[0] >= 0.9 * len(v))


def _is_row_number(name: str, values: pd.Series) -> bool:
    """A column holding 0..n-1 or 1..n in order, unnamed or named like an index."""
    norm = normalise(name)
    if not (norm in _ROWNUM_NAMES or name.startswith("column ") or norm.startswith("unnamed")):
        return False
    v = values.to_numpy()
    if len(v) < 2 or np.isnan(v).any():
        return False
    start = v[0]
    return start in (0, 1) and bool(np.array_equal(v, np.arange(start, start + len(v))))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _total_header(t: Table, j: int) -> bool:
    parts = [p for p in t.levels[j] if p] if j < len(t.levels) else []
    return any(is_total_label(p) for p in parts)


def _quasi_identifiers(t: Table, kinds: list[str | None], label_cols: list[int],
                       empty: dict[int, pd.Series]) -> str | None:
    birth, birth_exact, dates, sex, post = [], [], [], [], []
    for j, nm in enumerate(t.names):
        col = t.body[j][~empty[j]]
        if not len(col):
            continue
        vk = "date" if pd.api.types.is_datetime64_any_dtype(col.dtype) else values_kind(col)
        if kinds[j] == "birth":
            birth.append(nm)
            if vk == "date":
                birth_exact.append(nm)
        elif vk == "date":
            dates.append(nm)
        if kinds[j] == "sex" or vk == "sex":
            sex.append(nm)
        if kinds[j] == "postcode" or vk == "postcode":
            post.append(nm)
    if birth_exact and (sex or post):
        return f"date of birth ({birth_exact[0]}) with {'sex' if sex else 'postcode'} " \
               f"({(sex or post)[0]}): individuals can be re-identified"
    if (birth or dates) and sex and post:
        return (f"{'date of birth' if birth else 'exact date'} ({(birth or dates)[0]}), sex "
                f"({sex[0]}) and postcode ({post[0]}) together single out individuals")
    return None


# ---------------------------------------------------------------- differencing


def _suppression(t: Table, counts: list[int], label_cols: list[int], num: dict[int, pd.Series],
                 empty: dict[int, pd.Series], marker: dict[int, pd.Series]) -> list[Finding]:
    if not counts:
        return []
    n = len(t.body)
    if n * len(counts) > 50_000:
        return []
    suppressed = {(int(i), j) for j in counts
                  for i in np.flatnonzero((marker[j] | empty[j]).to_numpy())}
    if not suppressed:
        return []
    # dimensions of each cell: the row's labels (forward-filled) + the column's header parts
    row_dims: list[tuple[str, ...]] = []
    lab = t.body[label_cols].copy() if label_cols else pd.DataFrame(index=t.body.index)
    for j in label_cols[:-1]:
        lab[j] = lab[j].where(~empty[j], None).ffill()
    for i in range(n):
        row_dims.append(tuple("" if _isnull(v) else str(v).strip() for v in lab.iloc[i].tolist()))
    multi = len(counts) > 1
    entries: dict[tuple[int, int], tuple[str, ...]] = {}
    for j in counts:
        col_dims = tuple(p for p in t.levels[j]) if multi else ()
        for i in range(n):
            entries[(i, j)] = row_dims[i] + col_dims
    known = {c: float(num[c[1]].iat[c[0]]) for c in entries if c not in suppressed
             and not np.isnan(num[c[1]].iat[c[0]])}
    unknown = {c for c in entries if c in suppressed}
    lines = []
    for c, dims in entries.items():
        tot = [k for k, d in enumerate(dims) if is_total_label(d)]
        if not tot:
            continue
        # empty parts of a total entry (pandas margins over several levels) are totals too
        tot_set = set(tot) | {k for k, d in enumerate(dims) if d == "" and k > min(tot)}
        parts = [e for e, d in entries.items() if e != c
                 and all(d[k] == dims[k] for k in range(len(dims)) if k not in tot_set)
                 and not any(is_total_label(d[k]) for k in tot_set)
                 and not any(is_total_label(d[k]) for k in range(len(d)))]
        if parts:
            lines.append((c, parts))
    recovered: dict[tuple[int, int], str] = {}
    values = dict(known)
    changed = True
    while changed and lines:
        changed = False
        for total, parts in lines:
            cells = [total, *parts]
            unk = [c for c in cells if c not in values]
            if len(unk) != 1 or unk[0] not in unknown:
                continue
            u = unk[0]
            if u == total:
                values[u] = sum(values[c] for c in parts)
                recovered[u] = "its parts"
            else:
                values[u] = values[total] - sum(values[c] for c in parts if c != u)
                recovered[u] = "the total and the other cells"
            changed = True
    out: list[Finding] = []
    for (i, j), how in list(recovered.items())[:MAX_LOCATIONS]:
        out.append(finding("recoverable-suppression",
                           f"suppressed cell can be recomputed from {how} published alongside",
                           **t.loc(i, j, _labels(t, i, label_cols))))
    if not recovered:
        out.append(finding("suppressed-cells", f"{len(suppressed)} suppressed cells; none can be "
                           "recomputed from the totals published", **t.base))
    return out


def _isnull(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA


# ---------------------------------------------------------------- regression


def _regression(t: Table, policy: DisclosurePolicy, is_regression: bool, label_cols: list[int],
                value_cols: list[int], kinds: list[str | None],
                num: dict[int, pd.Series]) -> tuple[list[Finding], bool]:
    """Residual degrees of freedom, and whether the table gave any model size (df or
    observations) to judge them by."""
    df_vals: list[tuple[float, dict]] = []
    nobs = dfmodel = None
    for j in value_cols:
        v = num[j].dropna()
        if not len(v):
            continue
        if kinds[j] == "df":
            df_vals.append((float(v.min()), t.loc(int(v.idxmin()), j)))
        elif kinds[j] == "nobs":
            nobs = (float(v.min()), t.loc(int(v.idxmin()), j))
        elif kinds[j] == "dfmodel":
            dfmodel = float(v.max())
    wanted = DF_NAMES | NOBS_NAMES | DFMODEL_NAMES
    for j in label_cols:
        col = t.body[j]
        hits = {u for u in pd.unique(col.astype(str)) if normalise(u) in wanted}
        if not hits:
            continue
        for i in np.flatnonzero(col.astype(str).isin(hits).to_numpy()):
            i = int(i)
            key = normalise(col.iat[i])
            if key in wanted:
                right = [k for k in value_cols if not np.isnan(num[k].iat[i])]
                if not right and j + 1 < len(t.names) and not np.isnan(num[j + 1].iat[i]):
                    right = [j + 1]  # statsmodels' summary2 info: label, value pairs
                vals = [num[k].iat[i] for k in right]
                if not vals:
                    continue
                where = t.loc(i, right[0])
                if key in DF_NAMES:
                    df_vals.append((float(vals[0]), where))
                elif key in NOBS_NAMES:
                    nobs = (float(vals[0]), where)
                else:
                    dfmodel = float(vals[0])
    if not df_vals and nobs is not None:
        n_coef = len(t.body) if is_regression else 1
        k = dfmodel + 1 if dfmodel is not None else n_coef
        df_vals.append((nobs[0] - k, nobs[1]))
    out = []
    for df, where in df_vals:
        if df < policy.min_residual_df:
            out.append(finding("low-residual-df", f"residual degrees of freedom {_fmt(df)} below "
                               f"the minimum {policy.min_residual_df}", **where))
    if is_regression and not df_vals:
        out.append(finding("regression-without-df", "regression table without residual degrees "
                           "of freedom or number of observations", **t.base))
    return out, bool(df_vals)


# ---------------------------------------------------------------- dominance


def _dominance_columns(t: Table, value_cols: list[int]) -> tuple[dict[int, int], int | None]:
    tops: dict[int, int] = {}
    total = None
    for j in value_cols:
        norm = normalise(t.names[j])
        mt = _TOP_RE.match(norm)
        if mt:
            tops.setdefault(int(mt.group(1)), j)
        elif norm in _TOTAL_VALUE and total is None:
            total = j
    if 1 not in tops:
        return {}, None
    return tops, total


def _dominance(t: Table, policy: DisclosurePolicy, tops: dict[int, int], total: int | None,
               num: dict[int, pd.Series], label_cols: list[int]) -> list[Finding]:
    if not tops or total is None:
        return []
    nk = _Cells("dominance-nk", t, label_cols)
    pp = _Cells("dominance-p", t, label_cols)
    tot = num[total].to_numpy()
    topn = [num[tops[k]].to_numpy() for k in sorted(tops) if k <= policy.dominance_n]
    if len(topn) == policy.dominance_n:
        s = np.nansum(np.vstack(topn), axis=0)
        for i in np.flatnonzero((tot > 0) & (s > policy.dominance_k * tot)):
            nk.add(int(i), total, f"the top {policy.dominance_n} contributors make "
                   f"{s[i] / tot[i]:.0%} of the total (limit {policy.dominance_k:.0%})")
    if 1 in tops and 2 in tops:
        t1, t2 = num[tops[1]].to_numpy(), num[tops[2]].to_numpy()
        rest = tot - t1 - t2
        for i in np.flatnonzero((tot > 0) & (rest < policy.p_percent * t1)):
            pp.add(int(i), total, f"the rest after the two largest contributors ({_fmt(rest[i])})"
                   f" is under {policy.p_percent:.0%} of the largest ({_fmt(t1[i])})")
    return nk.findings() + pp.findings()
