"""What changed between two versions of a request, from the stored previews only.

A request that came back (changes requested) is resubmitted as a new version;
its checkers compare it with the version they reviewed. The comparison is
made from what each version's files showed the checkers — the previews
rendered when the files were checked and their check results — never from the
staged bytes: a diff must not show more than the previews did (see the
two-person rule on bytes in ``docs/airlock.md``).

:func:`compare_files` pairs the files of two versions by name (``added``,
``removed``, ``unchanged`` when the sha256 is the same, ``changed``);
:func:`table_diff` aligns two table previews — columns by header, rows by
content (:class:`difflib.SequenceMatcher`), rows replaced one for one compared
cell by cell — and counts the cells changed, added and removed. Masked cells
(a ``block`` file's sample) compare as masked. Never raises.
"""

from __future__ import annotations

import difflib
from typing import Any

__all__ = ["compare_files", "table_diff"]


def _cells(preview: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = [str(c) for c in preview.get("columns") or []]
    masked = set(preview.get("masked_columns") or [])
    rows = []
    for r in preview.get("rows") or []:
        row = [str(v) for v in r]
        row += [""] * (len(columns) - len(row))
        rows.append(["\u25a0\u25a0\u25a0" if i in masked else v for i, v in enumerate(row)])
    return columns, rows


def table_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The cell-level difference of two ``kind: table`` previews.

    ``rows``: one entry per aligned row — ``{"status": same|changed|added|removed,
    "old": index or None, "new": index or None, "cells": [column names changed]}``
    (indexes into each preview's ``rows``). ``cells_changed``/``cells_added``/
    ``cells_removed`` count cells of the common columns (a row added or removed
    counts all its cells; a column added or removed counts its cells in the rows
    that stayed). ``partial``: a preview was cut short, the diff covers what the
    previews hold only."""
    old_cols, old_rows = _cells(old)
    new_cols, new_rows = _cells(new)
    common = [c for c in new_cols if c in old_cols]
    oi = {c: old_cols.index(c) for c in common}
    ni = {c: new_cols.index(c) for c in common}

    def key(row: list[str], idx: dict[str, int]) -> tuple[str, ...]:
        return tuple(row[idx[c]] if idx[c] < len(row) else "" for c in common)

    a = [key(r, oi) for r in old_rows]
    b = [key(r, ni) for r in new_rows]
    rows: list[dict[str, Any]] = []
    changed = added = removed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [{"status": "same", "old": i, "new": j, "cells": []}
                     for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
            continue
        pairs = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(pairs):
            i, j = i1 + k, j1 + k
            cells = [c for c in common if a[i][common.index(c)] != b[j][common.index(c)]]
            changed += len(cells)
            rows.append({"status": "changed", "old": i, "new": j, "cells": cells})
        for i in range(i1 + pairs, i2):
            removed += len(old_cols)
            rows.append({"status": "removed", "old": i, "new": None, "cells": []})
        for j in range(j1 + pairs, j2):
            added += len(new_cols)
            rows.append({"status": "added", "old": None, "new": j, "cells": []})
    kept = sum(1 for r in rows if r["old"] is not None and r["new"] is not None)
    cols_added = [c for c in new_cols if c not in old_cols]
    cols_removed = [c for c in old_cols if c not in new_cols]
    added += kept * len(cols_added)
    removed += kept * len(cols_removed)
    return {
        "columns_added": cols_added,
        "columns_removed": cols_removed,
        "rows": rows,
        "cells_changed": changed,
        "cells_added": added,
        "cells_removed": removed,
        "partial": bool(old.get("truncated") or new.get("truncated")
                        or old.get("columns_truncated") or new.get("columns_truncated")),
    }


def _side(f: dict[str, Any] | None) -> dict[str, Any] | None:
    if f is None:
        return None
    out = {k: f[k] for k in ("id", "name", "version", "sha256", "size", "verdict", "format")
           if k in f}
    out["findings"] = len(f.get("findings") or [])
    if "preview" in f:
        out["preview"] = f["preview"]
    return out


def compare_files(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair the files of two versions (as the service shows them, previews included)
    by name: each with its ``status``, both sides and, for two table previews, the
    :func:`table_diff`."""
    by_old = {f["name"]: f for f in old}
    by_new = {f["name"]: f for f in new}
    names = [f["name"] for f in new] + [n for n in by_old if n not in by_new]
    out = []
    for name in names:
        o, n = by_old.get(name), by_new.get(name)
        if o is None:
            status = "added"
        elif n is None:
            status = "removed"
        elif o["sha256"] == n["sha256"]:
            status = "unchanged"
        else:
            status = "changed"
        entry: dict[str, Any] = {"name": name, "status": status, "old": _side(o), "new": _side(n)}
        if o is not None and n is not None and o.get("verdict") != n.get("verdict"):
            entry["verdict_changed"] = [o.get("verdict"), n.get("verdict")]
        po = (o or {}).get("preview") or {}
        pn = (n or {}).get("preview") or {}
        if status == "changed" and po.get("kind") == "table" and pn.get("kind") == "table":
            try:
                entry["table"] = table_diff(po, pn)
            except Exception as e:  # never fail the page: say it could not be compared
                entry["error"] = f"the previews could not be compared ({type(e).__name__})"
        elif status == "changed":
            entry["note"] = "not two table previews: compare the previews side by side"
        out.append(entry)
    return out
