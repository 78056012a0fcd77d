"""ACRO interop: its results.json read beside our checks, ours written in its format."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ecluse.cli import main
from ecluse.sdc import check_paths
from ecluse.sdc.acro import AcroError, load_results, to_acro


def _sdc(threshold=0, nk=0):
    keys = ("negative", "missing", "threshold", "p-ratio", "nk-rule", "all-values-are-same")
    summary = {"suppressed": False, **dict.fromkeys(keys, 0), "threshold": threshold,
               "nk-rule": nk}
    return {"summary": summary, "cells": {k: [] for k in keys}}


def acro_output(uid, status, name, exception="", summary=None):
    """One output as ACRO's ``finalise(path, "json")`` writes it."""
    return {"uid": uid, "status": status, "type": "table",
            "properties": {"method": "crosstab"},
            "files": [{"name": name, "sdc": _sdc(threshold=0 if status == "pass" else 2)}],
            "outcome": {"F": {"N": "ok", "S": "threshold; " if status != "pass" else "ok"}},
            "command": "acro.crosstab(df.region, df.sex)",
            "summary": summary or (status if status == "pass" else
                                   f"{status}; threshold: 2 cells may need suppressing; "),
            "timestamp": "2026-12-03T10:00:00", "comments": ["table 1 of the paper"],
            "exception": exception}


@pytest.fixture
def acro_folder(tmp_path):
    d = tmp_path / "outputs"
    d.mkdir()
    pd.DataFrame({"region": ["N", "S"], "F": [40, 52], "M": [61, 45]}).to_csv(
        d / "output_0_0.csv", index=False)
    pd.DataFrame({"region": ["N", "S"], "F": [40, 4], "M": [61, 45]}).to_csv(
        d / "output_1_0.csv", index=False)
    (d / "results.json").write_text(json.dumps({
        "version": "0.4.8",
        "results": {
            "output_0": acro_output("output_0", "pass", "output_0_0.csv"),
            "output_1": acro_output("output_1", "fail", "output_1_0.csv",
                                    exception="the region is public knowledge"),
        },
        "session_summary": {"DO_NOT_RELEASE": True, "data": []}}))
    return d


def test_acro_results_shown_beside_our_findings(acro_folder):
    rep = check_paths([acro_folder])
    by = {f.path.rsplit("/", 1)[-1]: f for f in rep.files}
    ok, bad, res = by["output_0_0.csv"], by["output_1_0.csv"], by["results.json"]
    assert ok.verdict == "pass" and [f.rule for f in ok.findings] == ["acro-pass"]
    assert ok.details["acro"][0]["status"] == "pass"
    # ours (small-count) and ACRO's (with the researcher's exception) side by side
    assert {f.rule for f in bad.findings} == {"small-count", "acro-outcome"}
    msg = next(f.message for f in bad.findings if f.rule == "acro-outcome")
    assert "output_1 fail" in msg and "the region is public knowledge" in msg
    assert bad.details["acro"][0]["exception"] == "the region is public knowledge"
    assert bad.verdict == "fail"
    # the results file itself is text a person reads
    assert res.verdict == "review" and {f.rule for f in res.findings} == {"free-text"}


def test_acro_review_alone_sends_a_file_to_review(acro_folder):
    doc = json.loads((acro_folder / "results.json").read_text())
    doc["results"]["output_0"]["status"] = "review"
    doc["results"]["output_0"]["summary"] = "review; a custom output"
    (acro_folder / "results.json").write_text(json.dumps(doc))
    rep = check_paths([acro_folder])
    ok = next(f for f in rep.files if f.path.endswith("output_0_0.csv"))
    assert ok.verdict == "review" and [f.rule for f in ok.findings] == ["acro-outcome"]


@pytest.mark.parametrize("mangle, error", [
    (lambda d: d["results"]["output_1"].update(status="maybe"), "status"),
    (lambda d: d["results"]["output_1"].pop("files"), "files"),
    (lambda d: d.update(results=[1, 2]), "results"),
    (lambda d: d["results"]["output_1"].update(uid="output_9"), "carries uid"),
    (lambda d: d["results"]["output_1"]["files"][0].update(name="../../etc/passwd"),
     "outside its folder"),
])
def test_malformed_acro_results_fail_closed(acro_folder, mangle, error):
    path = acro_folder / "results.json"
    doc = json.loads(path.read_text())
    mangle(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(AcroError, match=error):
        load_results(path)
    rep = check_paths([acro_folder])
    res = next(f for f in rep.files if f.path.endswith("results.json"))
    assert res.verdict == "review"
    assert any(f.rule == "reader-error" and error in f.message for f in res.findings)
    # nothing of a malformed file is attached to the outputs
    assert not any("acro" in f.details for f in rep.files)


def test_truncated_acro_results_fail_closed(acro_folder):
    path = acro_folder / "results.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(AcroError, match="not JSON"):
        load_results(path)


def test_acro_json_written_by_ecluse_check(acro_folder, tmp_path, capsys):
    out = tmp_path / "ecluse-results.json"
    assert main(["check", "--acro-json", str(out), str(acro_folder / "output_1_0.csv"),
                 str(acro_folder / "output_0_0.csv")]) == 1
    capsys.readouterr()
    doc = json.loads(out.read_text())
    assert set(doc) == {"version", "results"}
    first = doc["results"]["output_0"]
    assert first["status"] == "fail" and first["type"] == "table"
    assert first["files"][0]["name"] == "outputs/output_1_0.csv"  # relative to the results
    assert first["files"][0]["sdc"]["summary"]["threshold"] == 1
    assert first["files"][0]["sdc"]["cells"]["threshold"] == [[3, "F"]]
    assert first["outcome"] == {"F": {"3": "threshold; "}}
    assert first["properties"]["policy_pack"] == "ecluse-default"
    assert doc["results"]["output_1"]["status"] == "pass"
    # what we write is what we read: our own output validates as ACRO's format
    (tmp_path / "again").mkdir()
    again = tmp_path / "again" / "results.json"
    again.write_text(out.read_text())
    assert [o.status for o in load_results(again).results.values()] == ["fail", "pass"]


def test_block_is_a_fail_in_acro_terms(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("patient_id,age\nP1,40\nP2,41\n")
    doc = to_acro(check_paths([p]))
    assert doc["results"]["output_0"]["status"] == "fail"
    assert doc["results"]["output_0"]["properties"]["ecluse_verdict"] == "block"
