"""*Check for export* in the workspace server (issue 22 item 3): what of the airlock's
answer reaches the browser. The whole path (workspace → airlock dry run → panel) is
``tests/functional/test_check_before_export.py``."""

from __future__ import annotations

import pytest


def _table(n_rows: int, n_cols: int, flagged: list[list[int]]) -> dict:
    return {"kind": "table", "columns": [f"c{j}" for j in range(n_cols)],
            "rows": [[f"r{i}c{j}" + "x" * 60 for j in range(n_cols)] for i in range(n_rows)],
            "flagged": flagged, "flagged_columns": [], "masked_columns": [], "truncated": False}


def test_only_a_small_window_around_the_findings_reaches_the_browser(workspace_extension):
    from ecluse_workspace.check import CELL_CHARS, PREVIEW_COLUMNS, PREVIEW_ROWS, small_preview

    p = small_preview(_table(200, 40, [[150, 30], [3, 1]]))
    assert p["lines"] == [5, 152]  # the header is line 1
    assert len(p["columns"]) == PREVIEW_COLUMNS and "c30" in p["columns"]
    assert p["more_columns"] is True and p["more_rows"] is False
    assert all(len(c) <= CELL_CHARS for r in p["rows"] for c in r)
    assert len(p["rows"]) == 2  # no row without a finding
    # the flagged cells, in the window's own coordinates
    flagged = {p["rows"][i][j][:8] for i, j in p["flagged"]}
    assert flagged == {"r150c30x", "r3c1xxxx"}
    # many findings: at most PREVIEW_ROWS rows
    many = small_preview(_table(200, 3, [[i, 2] for i in range(0, 200, 2)]))
    assert len(many["rows"]) == PREVIEW_ROWS and many["more_rows"] is True
    # nothing pointed at: the first rows show the shape; not a table: nothing
    assert small_preview(_table(50, 3, []))["lines"] == [2, 3, 4]
    for other in ({"kind": "text", "text": "secret"}, {"kind": "none"}, None, "x"):
        assert small_preview(other) is None


@pytest.mark.parametrize("finding", [
    {"rule": "small-count", "severity": "fail", "message": "count 3",
     "location": {"row": 3, "column": "n", "labels": {"sex": "F"}, "value": 3}},
])
def test_findings_keep_their_position_and_nothing_else(workspace_extension, finding):
    from ecluse_workspace.check import _finding

    assert _finding(finding) == {"rule": "small-count", "severity": "fail",
                                 "message": "count 3", "location": {"row": 3, "column": "n"}}
