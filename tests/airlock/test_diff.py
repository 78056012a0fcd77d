"""Comparing two versions of a request from their previews (issue 21 item 4): the
table diff itself, and the service's comparison, which shows no more than the
previews did — never a file's bytes."""

from __future__ import annotations

import pytest

from ecluse.airlock.diff import compare_files, table_diff
from ecluse.airlock.errors import InvalidInput, PermissionDenied
from ecluse.airlock.rules import State


def _table(columns, rows, **kw):
    return {"kind": "table", "columns": columns, "rows": rows, "flagged": [],
            "flagged_columns": [], "masked_columns": [], **kw}


def test_cells_changed_added_and_removed_are_counted():
    old = _table(["sex", "band", "n"], [["F", "18-40", "25"], ["F", "41-65", "3"],
                                        ["M", "18-40", "31"]])
    new = _table(["sex", "band", "n"], [["F", "18-40", "25"], ["F", "41-65", "<5"],
                                        ["M", "18-40", "31"], ["M", "41-65", "40"]])
    d = table_diff(old, new)
    assert d["cells_changed"] == 1 and d["cells_added"] == 3 and d["cells_removed"] == 0
    changed = [r for r in d["rows"] if r["status"] == "changed"]
    assert changed == [{"status": "changed", "old": 1, "new": 1, "cells": ["n"]}]
    assert [r["new"] for r in d["rows"] if r["status"] == "added"] == [3]
    assert not d["partial"]


def test_a_row_inserted_is_one_row_added_not_every_row_changed():
    old = _table(["g", "n"], [["a", "10"], ["c", "30"], ["d", "40"]])
    new = _table(["g", "n"], [["a", "10"], ["b", "20"], ["c", "30"], ["d", "40"]])
    d = table_diff(old, new)
    assert d["cells_changed"] == 0 and d["cells_added"] == 2
    assert [r["status"] for r in d["rows"]] == ["same", "added", "same", "same"]


def test_columns_added_and_removed_and_masked_cells():
    old = _table(["id", "n", "old"], [["P1", "10", "x"]], masked_columns=[0])
    new = _table(["id", "n", "pct"], [["P2", "10", "50%"]], masked_columns=[0],
                 truncated=True)
    d = table_diff(old, new)
    # the masked identifier compares as masked: its hidden value never shows as a change
    assert d["cells_changed"] == 0
    assert d["columns_added"] == ["pct"] and d["columns_removed"] == ["old"]
    assert d["cells_added"] == 1 and d["cells_removed"] == 1
    assert d["partial"] is True


def test_files_paired_by_name():
    a = {"name": "a.csv", "sha256": "1", "verdict": "fail", "preview": _table(["n"], [["3"]])}
    b = {"name": "b.csv", "sha256": "2", "verdict": "pass"}
    a2 = {"name": "a.csv", "sha256": "3", "verdict": "pass", "preview": _table(["n"], [["c"]])}
    c = {"name": "c.csv", "sha256": "4", "verdict": "pass"}
    out = {e["name"]: e for e in compare_files([a, b], [a2, c])}
    assert out["a.csv"]["status"] == "changed" and out["a.csv"]["table"]["cells_changed"] == 1
    assert out["a.csv"]["verdict_changed"] == ["fail", "pass"]
    assert out["b.csv"]["status"] == "removed" and out["c.csv"]["status"] == "added"
    same = compare_files([b], [dict(b)])
    assert same[0]["status"] == "unchanged" and "table" not in same[0]


LONG_OLD = ("long.csv", b"grp,n\n" + b"".join(f"g{i},{20 + i}\n".encode() for i in range(40))
            + b"SECRET-TAIL-OLD,99\n")
LONG_NEW = ("long.csv", b"grp,n\n" + b"".join(f"g{i},{20 + i}\n".encode() for i in range(40))
            .replace(b"g1,21", b"g1,25") + b"SECRET-TAIL-NEW,98\n")


@pytest.fixture
def returned(make_service):
    """alice's request of a 41-row table (more than the preview's rows), sent back by
    carol, the table replaced (one cell changed, a tail row past the preview changed),
    resubmitted."""
    svc = make_service(preview_rows=10)
    alice = svc.identity("alice", ["cardio-los"])
    req = svc.create_request(alice, project="cardio-los", title="t", justification="j")
    rid = req["id"]
    svc.add_file(alice, rid, *LONG_OLD[:1], [LONG_OLD[1]])
    svc.submit(alice, rid)
    svc.review(svc.identity("carol", ["output-checkers"]), rid, decision="request_changes",
               comment="round g1")
    svc.add_file(alice, rid, LONG_NEW[0], [LONG_NEW[1]])
    svc.resubmit(alice, rid)
    return svc, rid


def test_comparison_of_a_returned_request_shows_previews_never_bytes(returned):
    svc, rid = returned
    dan = svc.identity("dan", ["output-checkers"])
    cmp = svc.compare_versions(dan, rid)
    assert (cmp["from"], cmp["to"]) == (1, 2)
    [f] = cmp["files"]
    assert f["status"] == "changed"
    assert f["table"]["cells_changed"] == 1 and f["table"]["partial"] is True
    [row] = [r for r in f["table"]["rows"] if r["status"] == "changed"]
    assert row["cells"] == ["n"]
    text = repr(cmp)
    # the rows past the preview are nowhere in the comparison
    assert "SECRET-TAIL" not in text
    assert len(f["old"]["preview"]["rows"]) == 10 and len(f["new"]["preview"]["rows"]) == 10
    # audited, with the previews shown
    [ev] = svc.audit.records(event="airlock.versions.compared")
    assert ev.actor == "dan" and ev.details["compared"] == [1, 2]
    assert len(ev.details["previews"]) == 2


def test_comparison_follows_who_may_see_previews(returned):
    svc, rid = returned
    with pytest.raises(PermissionDenied):  # staff do not read previews
        svc.compare_versions(svc.identity("sam", ["staff"]), rid)
    with pytest.raises(InvalidInput, match="1 <= from < to <= 2"):
        svc.compare_versions(svc.identity("dan", ["output-checkers"]), rid, 2, 2)
    # once rejected, nothing of the files is shown to anyone
    svc.review(svc.identity("dan", ["output-checkers"]), rid, decision="reject",
               comment="no")
    for who in (svc.identity("alice", ["cardio-los"]),
                svc.identity("carol", ["output-checkers"])):
        with pytest.raises(PermissionDenied):
            svc.compare_versions(who, rid)
    assert svc.get_request(svc.identity("alice", ["cardio-los"]), rid,
                           record_view=False)["state"] == State.REJECTED
